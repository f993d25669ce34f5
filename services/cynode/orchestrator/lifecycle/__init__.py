"""The one home of a task's and a job's life: its words (`status`) and every write of a
status or a lease, as named operations over batched statements. The rest of the
orchestrator asks the lifecycle and never writes a status itself (a test enforces it):

- create: `queued_task`, `first_job`, `enqueue_many`; each job's place in the
  fair-share order: `take_turns` (SPEC §3.9)
- claim: `claim` (a queued job to a node, a new attempt with a lease)
- start and finish: `plan_started`, `plan_results` over `load_jobs` (what nodes report);
  a finish's `Ended`, what it leaves the job and the task at
- renew: `renew`, `extend`, `hold` (start-up), `lapse` (a node that lost its jobs)
- requeue or fail after a lost lease: `expire`; a node taking back its copy: `reclaim`
- cancel: `cancel_task`, then `take_cancels` to tell the nodes
- delete: `delete_task` (an ended task, its jobs and their rows)

The transitions are written down in docs/spec.md (SPEC §3.6).
"""

from cynode.orchestrator.lifecycle.cancel import Canceled, cancel_task, take_cancels
from cynode.orchestrator.lifecycle.claim import claim
from cynode.orchestrator.lifecycle.create import enqueue_many, first_job, queued_task
from cynode.orchestrator.lifecycle.delete import Deleted, delete_task
from cynode.orchestrator.lifecycle.fair import NoSuchUser, Turn, take_turns
from cynode.orchestrator.lifecycle.leases import (
    Expired,
    expire,
    extend,
    hold,
    lapse,
    reclaim,
    renew,
)
from cynode.orchestrator.lifecycle.progress import (
    Ended,
    Finishes,
    JobRow,
    ResultReport,
    StartReport,
    Starts,
    load_jobs,
    plan_results,
    plan_started,
)
from cynode.orchestrator.lifecycle.status import (
    LIVE,
    RESULT_STATUSES,
    STATUSES,
    TERMINAL,
    AttemptStatus,
    Reason,
    Status,
    result_status,
)

__all__ = [
    "LIVE",
    "RESULT_STATUSES",
    "STATUSES",
    "TERMINAL",
    "AttemptStatus",
    "Canceled",
    "Deleted",
    "Ended",
    "Expired",
    "Finishes",
    "JobRow",
    "NoSuchUser",
    "Reason",
    "ResultReport",
    "StartReport",
    "Starts",
    "Status",
    "Turn",
    "cancel_task",
    "claim",
    "delete_task",
    "enqueue_many",
    "expire",
    "extend",
    "first_job",
    "hold",
    "lapse",
    "load_jobs",
    "plan_results",
    "plan_started",
    "queued_task",
    "reclaim",
    "renew",
    "result_status",
    "take_cancels",
    "take_turns",
]
