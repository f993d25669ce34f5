"""Per-user quotas at the gateway (SPEC §3.9): queued tasks and task timeout, checked
in the create's transaction; the running-jobs quota is the scheduler's. Each quota is
the user's own value where set, else the configured default; 0 is no limit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cynode.orchestrator.config import ControlPlaneOptions
from cynode.orchestrator.lifecycle import Status, Turn
from cynode.orchestrator.store.tables import JOBS, TASKS

# Queued tasks leave the queue as slots free up; a client told to wait this long
# finds room again under ordinary load without polling hard.
QUEUED_RETRY_AFTER_SECONDS = 10


@dataclass(frozen=True)
class QuotaDefaults:
    max_queued_tasks: int = 0
    max_running_jobs: int = 0
    max_task_timeout_seconds: int = 0
    # Chat and embeddings requests in flight (SPEC §10.4), checked by the inference router.
    max_inference_requests: int = 0
    # What a task that names no timeout gets (not a quota; a limit below it wins).
    default_timeout_seconds: int = 0

    @classmethod
    def of(cls, options: ControlPlaneOptions) -> QuotaDefaults:
        return cls(
            max_queued_tasks=options.max_queued_tasks,
            max_running_jobs=options.max_running_jobs,
            max_task_timeout_seconds=options.max_timeout_seconds,
            max_inference_requests=options.inference_user_concurrency,
            default_timeout_seconds=options.default_timeout_seconds,
        )


class Limits(NamedTuple):
    """The quotas that apply to one user."""

    max_queued_tasks: int
    max_running_jobs: int
    max_task_timeout_seconds: int
    max_inference_requests: int


class Usage(NamedTuple):
    queued_tasks: int
    running_jobs: int


def _pick(own: int | None, default: int) -> int:
    return default if own is None else own


def limits_of(
    defaults: QuotaDefaults,
    max_queued_tasks: int | None,
    max_running_jobs: int | None,
    max_task_timeout_seconds: int | None,
    max_inference_requests: int | None = None,
) -> Limits:
    return Limits(
        _pick(max_queued_tasks, defaults.max_queued_tasks),
        _pick(max_running_jobs, defaults.max_running_jobs),
        _pick(max_task_timeout_seconds, defaults.max_task_timeout_seconds),
        _pick(max_inference_requests, defaults.max_inference_requests),
    )


class OverQuota(Exception):
    """A create past one of the user's quotas (429); `retry_after` when waiting helps."""

    def __init__(self, detail: str, retry_after: int | None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


_QUEUED = (
    sa.select(sa.func.count())
    .select_from(TASKS)
    .where(TASKS.c.user_id == sa.bindparam("user"), TASKS.c.status == Status.QUEUED)
)
_RUNNING = (
    sa.select(sa.func.count())
    .select_from(JOBS.join(TASKS, TASKS.c.id == JOBS.c.task_id))
    .where(TASKS.c.user_id == sa.bindparam("user"), JOBS.c.status == Status.RUNNING)
)
_USAGE = sa.select(_QUEUED.scalar_subquery(), _RUNNING.scalar_subquery())


async def usage(conn: AsyncConnection, user_id: str) -> Usage:
    row = (await conn.execute(_USAGE, {"user": user_id})).one()
    return Usage(int(row[0]), int(row[1]))


async def admit(
    conn: AsyncConnection, user_id: str, turn: Turn, timeout_seconds: int, defaults: QuotaDefaults
) -> int:
    """Checks a new task against the user's quotas, in the create's transaction after
    `take_turns` (which locked the user's row and read their own values); returns the
    timeout to store. Raises OverQuota."""
    limits = limits_of(
        defaults, turn.max_queued_tasks, turn.max_running_jobs, turn.max_task_timeout_seconds
    )
    cap = limits.max_task_timeout_seconds
    if cap:
        if timeout_seconds > cap:
            raise OverQuota(
                f"timeout_seconds {timeout_seconds} is over your limit of {cap} s", None
            )
        if timeout_seconds == 0 and defaults.default_timeout_seconds > cap:
            timeout_seconds = cap
    if limits.max_queued_tasks:
        queued = int((await conn.execute(_QUEUED, {"user": user_id})).scalar_one())
        if queued >= limits.max_queued_tasks:
            raise OverQuota(
                f"quota: at most {limits.max_queued_tasks} queued tasks per user "
                f"({queued} queued); retry when some have started",
                QUEUED_RETRY_AFTER_SECONDS,
            )
    return timeout_seconds
