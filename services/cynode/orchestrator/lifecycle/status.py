"""The words of a task's and a job's life, one vocabulary for the store, the API and the
wire. `Status` matches the proto enum `cynode.jobs.v1.JobStatus` member for member
(`JOB_STATUS_<NAME>`), except `JOB_STATUS_SUPERSEDED`, which nothing ever set and which
stays in the proto only so that old peers still parse (SPEC §2)."""

from __future__ import annotations

from enum import StrEnum

from cynode.jobs.v1 import job_pb2


class Status(StrEnum):
    """A task's or a job's status, as stored and as the API shows it."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


STATUSES = frozenset(Status)
TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELED})
# A job a node may hold: queued jobs have a node only while a lapsed copy may be reclaimed.
LIVE = (Status.QUEUED, Status.RUNNING)


class AttemptStatus(StrEnum):
    """One dispatch of a job. Attempt rows start `assigned`, become `running`, and take the
    node's result status; `lost` marks an attempt whose lease ran out (a late result
    still lands on it, and the node may reclaim it while the job waits for a new one)."""

    ASSIGNED = "assigned"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"
    LOST = "lost"


# What a node's JobResult can say; an attempt row with one of these holds a result.
RESULT_STATUSES = frozenset({AttemptStatus.COMPLETED, AttemptStatus.FAILED, AttemptStatus.CANCELED})


class Reason(StrEnum):
    """Why a job or task ended the way it did, or why a node is told to stop a copy."""

    CANCELED = "canceled"  # the user canceled the task
    TIMEOUT = "timeout"  # set by the node: the job ran past its effective timeout
    ERROR = "error"  # a failed or canceled result that named no reason
    NODE_LOST = "node_lost"  # the lease ran out on the last allowed attempt
    LEASE_EXPIRED = "lease_expired"  # CancelJob: the copy's lease ran out, the job moved on
    SUPERSEDED = "superseded"  # CancelJob: a held copy whose attempt is no longer current


_FROM_PROTO: dict[int, AttemptStatus] = {
    job_pb2.JOB_STATUS_COMPLETED: AttemptStatus.COMPLETED,
    job_pb2.JOB_STATUS_FAILED: AttemptStatus.FAILED,
    job_pb2.JOB_STATUS_CANCELED: AttemptStatus.CANCELED,
}


def result_status(value: int) -> AttemptStatus:
    """A JobResult's status; anything but completed or canceled counts as failed."""
    return _FROM_PROTO.get(value, AttemptStatus.FAILED)
