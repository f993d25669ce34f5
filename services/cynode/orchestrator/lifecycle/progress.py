"""Progress: what nodes report about a job's attempt, as writes of its status.

A JobStarted moves the job (and its task) from queued to running; a JobResult ends the
attempt and, if it is the job's current attempt, the job and its task. The plans are made
for a whole batch before anything is written, so that a job that both started and
finished within one batch is written once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cynode.jobs.v1 import job_pb2
from cynode.orchestrator.lifecycle.status import (
    RESULT_STATUSES,
    TERMINAL,
    AttemptStatus,
    Reason,
    Status,
    result_status,
)
from cynode.orchestrator.store.models import Job, Task, new_id, utcnow
from cynode.orchestrator.store.tables import ATTEMPTS, JOBS, TASKS, Many, any_id, chunked


class StartReport(Protocol):
    """A node said it started (job_id, attempt) at `at`."""

    node_id: str
    job_id: str
    attempt: int
    at: datetime


class ResultReport(Protocol):
    """A node's JobResult (its node_id already the token's)."""

    node_id: str
    result: job_pb2.JobResult


@dataclass
class JobRow:
    id: str
    task_id: str
    attempt: int
    status: str
    node_id: str | None
    ended_at: datetime | None
    started_at: datetime | None = None


@dataclass(frozen=True)
class Ended:
    """A job's end and its task's as a batch of results writes them: every column of
    the job and of the task that the write changes, with the values written. The
    ingest hands it to the task's watchers on this replica after the commit, so they
    need not read back what was just written (SPEC §3.6)."""

    task_id: str
    task_status: str
    task_reason: str | None
    job_id: str
    attempt: int
    node_id: str | None
    status: str
    exit_code: int
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    reason: str | None
    started_at: datetime | None
    ended_at: datetime
    # The task's and the job's updated_at.
    at: datetime
    # How many files the result announced from /workspace/out/ (its artifact set).
    artifacts: int

    def onto(self, task: Task, job: Job) -> None:
        """Writes the end onto the caller's own copies of the task and the job (read
        before the commit, detached): they then hold what a read after it would."""
        task.status, task.reason, task.updated_at = self.task_status, self.task_reason, self.at
        job.status, job.attempt, job.node_id = self.status, self.attempt, self.node_id
        job.exit_code, job.reason = self.exit_code, self.reason
        job.stdout, job.stderr = self.stdout, self.stderr
        job.stdout_truncated, job.stderr_truncated = self.stdout_truncated, self.stderr_truncated
        job.started_at, job.ended_at, job.updated_at = self.started_at, self.ended_at, self.at


_RESULT_FIELDS = (
    "status",
    "exit_code",
    "stdout",
    "stderr",
    "stdout_truncated",
    "stderr_truncated",
    "reason",
    "started_at",
    "ended_at",
)

# Built once: a statement object memoizes its cache key, so reusing it saves both the
# construction and the cache-key walk that each batch would otherwise repeat.
# Keyed by "is Postgres": the id-list statements differ by backend (see any_id).
# The jobs with their attempt rows (one row per attempt, or one with NULLs for a job not
# yet dispatched), in one round trip.
_LOAD_JOBS = {
    pg: sa.select(
        JOBS.c.id,
        JOBS.c.task_id,
        JOBS.c.attempt,
        JOBS.c.status,
        JOBS.c.node_id,
        JOBS.c.ended_at,
        JOBS.c.started_at,
        ATTEMPTS.c.attempt,
        ATTEMPTS.c.status,
    )
    .select_from(JOBS.outerjoin(ATTEMPTS, ATTEMPTS.c.job_id == JOBS.c.id))
    .where(any_id(JOBS.c.id, pg))
    for pg in (True, False)
}
_START_JOBS = Many(
    JOBS.update()
    .where(JOBS.c.id == sa.bindparam("b_id"), JOBS.c.status == Status.QUEUED)
    .values(
        status=Status.RUNNING, started_at=sa.bindparam("b_at"), updated_at=sa.bindparam("b_now")
    )
)
_START_TASKS = Many(
    TASKS.update()
    .where(TASKS.c.id == sa.bindparam("b_id"), TASKS.c.status == Status.QUEUED)
    .values(status=Status.RUNNING, updated_at=sa.bindparam("b_now"))
)
_START_ATTEMPTS = Many(
    ATTEMPTS.update()
    .where(
        ATTEMPTS.c.job_id == sa.bindparam("b_job"),
        ATTEMPTS.c.attempt == sa.bindparam("b_attempt"),
        ATTEMPTS.c.status == AttemptStatus.ASSIGNED,
    )
    .values(status=AttemptStatus.RUNNING, started_at=sa.bindparam("b_at"))
)
_INSERT_ATTEMPTS = ATTEMPTS.insert()
_RESULT_ATTEMPTS = Many(
    ATTEMPTS.update()
    .where(
        ATTEMPTS.c.job_id == sa.bindparam("b_job"),
        ATTEMPTS.c.attempt == sa.bindparam("b_attempt"),
    )
    .values(
        {
            **{k: sa.bindparam(f"b_{k}") for k in _RESULT_FIELDS},
            # A result that carries no start time (a job stopped before it started on
            # a node that says so) keeps the one its JobStarted recorded.
            "started_at": sa.func.coalesce(
                sa.bindparam("b_started_at", type_=ATTEMPTS.c.started_at.type),
                ATTEMPTS.c.started_at,
            ),
        }
    )
)
_RESULT_JOBS = Many(
    JOBS.update()
    .where(JOBS.c.id == sa.bindparam("b_id"))
    .values(
        {
            **{k: sa.bindparam(f"b_{k}") for k in _RESULT_FIELDS if k != "started_at"},
            "status": sa.bindparam("b_status"),
            "updated_at": sa.bindparam("b_now"),
            "started_at": sa.func.coalesce(
                JOBS.c.started_at, sa.bindparam("b_started_at", type_=JOBS.c.started_at.type)
            ),
        }
    )
)
_RESULT_TASKS = Many(
    TASKS.update()
    .where(TASKS.c.id == sa.bindparam("b_id"))
    .values(
        status=sa.bindparam("b_status"),
        reason=sa.bindparam("b_reason"),
        updated_at=sa.bindparam("b_now"),
    )
)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ts(msg: Any, name: str) -> datetime | None:
    """The Timestamp field `name` as an aware UTC datetime (what ToDatetime(UTC) gives,
    in half its time: two of these per result)."""
    if not msg.HasField(name):
        return None
    ts = getattr(msg, name)
    return _EPOCH + timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)


@dataclass
class Starts:
    """The UPDATEs of a batch's JobStarted events, keyed so that results in the same
    batch can take theirs over: within one transaction the running step of a job that
    also finished is never seen by anyone, and writing it costs three row versions."""

    # The events whose job moves to running, each with the task that moves with it, by
    # job id; the events whose attempt row does, by (job, attempt). Rows are made at run().
    jobs: dict[str, tuple[StartReport, str]] = field(default_factory=dict)
    attempts: dict[tuple[str, int], StartReport] = field(default_factory=dict)

    async def run(self, conn: AsyncConnection) -> None:
        now = utcnow()
        if self.jobs:
            await _START_JOBS.run(
                conn,
                [{"b_id": j, "b_at": ev.at, "b_now": now} for j, (ev, _) in self.jobs.items()],
            )
            await _START_TASKS.run(
                conn, [{"b_id": task, "b_now": now} for _, task in self.jobs.values()]
            )
        if self.attempts:
            await _START_ATTEMPTS.run(
                conn,
                [
                    {"b_job": job, "b_attempt": attempt, "b_at": ev.at}
                    for (job, attempt), ev in self.attempts.items()
                ],
            )


@dataclass
class Finishes:
    """The writes of a batch's results."""

    inserts: list[dict[str, Any]] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    # What those writes leave each task at, by task (the last write of a task wins, as
    # the UPDATEs run in order).
    ended: dict[str, Ended] = field(default_factory=dict)

    async def run(self, conn: AsyncConnection) -> None:
        if self.inserts:
            await conn.execute(_INSERT_ATTEMPTS, self.inserts)
        if self.updates:
            await _RESULT_ATTEMPTS.run(conn, self.updates)
        if self.jobs:
            await _RESULT_JOBS.run(conn, self.jobs)
            await _RESULT_TASKS.run(conn, self.tasks)


def plan_results(
    results: Sequence[ResultReport],
    jobs: dict[str, JobRow],
    attempts: dict[tuple[str, int], str],
    touched: set[str],
    started: Starts,
) -> Finishes:
    out = Finishes()
    if not results:
        return out
    now = utcnow()
    for ev in results:
        res = ev.result
        job = jobs.get(res.job_id)
        if job is None:
            continue  # unknown job: acknowledged so the node forgets it
        key = (res.job_id, res.attempt)
        known = attempts.get(key)
        if known in RESULT_STATUSES:
            continue  # a replay
        status = result_status(res.status)
        reason = res.reason or (None if status == AttemptStatus.COMPLETED else Reason.ERROR)
        ended_at = _ts(res, "ended_at") or now
        # The result's columns as bound parameters (b_<column>), shared by the
        # attempt's and the job's UPDATE.
        bound: dict[str, Any] = {
            "b_status": status,
            "b_exit_code": res.exit_code,
            "b_stdout": res.stdout,
            "b_stderr": res.stderr,
            "b_stdout_truncated": res.stdout_truncated,
            "b_stderr_truncated": res.stderr_truncated,
            "b_reason": reason,
            "b_started_at": _ts(res, "started_at"),
            "b_ended_at": ended_at,
        }
        attempts[key] = status
        # The result sets every column the attempt's start would have (its start time
        # too, when the result itself has none).
        folded = started.attempts.pop(key, None)
        if folded is not None and bound["b_started_at"] is None:
            bound["b_started_at"] = folded.at
        if known is None:
            row = {k[2:]: v for k, v in bound.items()}
            row.update(
                job_id=res.job_id,
                attempt=res.attempt,
                node_id=ev.node_id,
                received_at=now,
                id=new_id(),
            )
            out.inserts.append(row)
        else:
            out.updates.append({**bound, "b_job": res.job_id, "b_attempt": res.attempt})
        touched.add(job.task_id)
        if job.attempt != res.attempt:
            continue  # a stale attempt: recorded, never overwrites
        if job.status == Status.QUEUED and status == AttemptStatus.CANCELED:
            # The copy was stopped because its lease lapsed; the job itself was
            # requeued (same attempt number until it is dispatched again), not canceled.
            continue
        if job.status in TERMINAL and not (job.status == Status.CANCELED and job.ended_at is None):
            continue
        # A canceled job keeps its status but gets the output its container left.
        new_status = Status.CANCELED if job.status == Status.CANCELED else Status(status)
        job.status = new_status
        job.ended_at = ended_at
        job_row = {**bound, "b_status": new_status, "b_id": res.job_id, "b_now": now}
        start = started.jobs.pop(res.job_id, None)
        if start is not None:
            # Started in this batch too: its start time goes in with the result
            # (started_at is NULL until then, so coalesce keeps it as the start's
            # UPDATE would have), and the task skips its running step.
            job_row["b_started_at"] = start[0].at
        out.jobs.append(job_row)
        out.tasks.append(
            {"b_id": job.task_id, "b_status": new_status, "b_reason": reason, "b_now": now}
        )
        out.ended[job.task_id] = Ended(
            task_id=job.task_id,
            task_status=new_status,
            task_reason=reason,
            job_id=res.job_id,
            attempt=res.attempt,
            node_id=job.node_id,
            status=new_status,
            exit_code=res.exit_code,
            stdout=res.stdout,
            stderr=res.stderr,
            stdout_truncated=res.stdout_truncated,
            stderr_truncated=res.stderr_truncated,
            reason=reason,
            # What _RESULT_JOBS's coalesce keeps: a start already stored wins.
            started_at=job.started_at or job_row["b_started_at"],
            ended_at=ended_at,
            at=now,
            artifacts=len(res.artifacts.artifacts),
        )
    return out


def plan_started(
    starts: Sequence[StartReport], jobs: dict[str, JobRow], touched: set[str]
) -> Starts:
    out = Starts()
    for ev in starts:
        job = jobs.get(ev.job_id)
        if job is None:
            continue
        # A repeated start changes nothing: its UPDATE would find the attempt running.
        out.attempts.setdefault((ev.job_id, ev.attempt), ev)
        if job.attempt == ev.attempt and job.status == Status.QUEUED and job.node_id == ev.node_id:
            job.status = Status.RUNNING
            out.jobs[ev.job_id] = (ev, job.task_id)
            touched.add(job.task_id)
    return out


async def load_jobs(
    conn: AsyncConnection, pg: bool, ids: set[str]
) -> tuple[dict[str, JobRow], dict[tuple[str, int], str]]:
    """The jobs by id, and the statuses of their attempt rows by (job, attempt)."""
    jobs: dict[str, JobRow] = {}
    attempts: dict[tuple[str, int], str] = {}
    for part in chunked(sorted(ids)):
        for r in await conn.execute(_LOAD_JOBS[pg], {"ids": list(part)}):
            if r[0] not in jobs:
                jobs[r[0]] = JobRow(*r[:7])
            if r[7] is not None:
                attempts[(r[0], r[7])] = r[8]
    return jobs, attempts
