"""Fair share: each new job's place in the claim order (SPEC §3.9).

Start-time fair queueing over users. A job's `fair_key` is its start tag: a user's
next job starts where their previous one finished (`users.fair_last`), but never
before the virtual time V, so a user who was idle cannot bank turns. Each job moves
its user's finish tag on by 1/weight. The scheduler claims the lowest keys first (then
the oldest): with several users queued, free slots go round-robin across them in
proportion to their weights, and oldest first within each.

V is the highest key among running jobs (the turn being served), else the lowest key
still queued, else 0. It is read and the user's tag advanced in one UPDATE … RETURNING
on the user's row, so creates of one user take their keys one after another.
"""

from __future__ import annotations

from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cynode.orchestrator.lifecycle.status import Status
from cynode.orchestrator.store.tables import JOBS, TASKS, USERS


class Turn(NamedTuple):
    """The keys of a user's next jobs and what their row says about quotas."""

    first: float  # the first new job's key; the i-th is first + i * step
    step: float
    max_queued_tasks: int | None
    max_running_jobs: int | None
    max_task_timeout_seconds: int | None

    def keys(self, n: int) -> list[float]:
        return [self.first + i * self.step for i in range(n)]


def _virtual_time() -> sa.ColumnElement[float]:
    running = sa.select(sa.func.max(JOBS.c.fair_key)).where(JOBS.c.status == Status.RUNNING)
    queued = sa.select(sa.func.min(JOBS.c.fair_key)).where(JOBS.c.status == Status.QUEUED)
    return sa.func.coalesce(running.scalar_subquery(), queued.scalar_subquery(), 0.0)


def _advance_stmt() -> sa.Update:
    v = _virtual_time()
    backlog = sa.exists().where(TASKS.c.user_id == USERS.c.id, TASKS.c.status == Status.QUEUED)
    start = sa.case((sa.and_(backlog, USERS.c.fair_last > v), USERS.c.fair_last), else_=v)
    return (
        USERS.update()
        .where(USERS.c.id == sa.bindparam("user"))
        .values(fair_last=start + sa.bindparam("n", type_=sa.Float) / USERS.c.weight)
        .returning(
            USERS.c.fair_last,
            USERS.c.weight,
            USERS.c.max_queued_tasks,
            USERS.c.max_running_jobs,
            USERS.c.max_task_timeout_seconds,
        )
    )


_ADVANCE = _advance_stmt()


class NoSuchUser(LookupError):
    pass


async def take_turns(conn: AsyncConnection, user_id: str, n: int) -> Turn:
    """Reserves keys for `n` new jobs of `user_id` (before they are inserted, in the
    caller's transaction)."""
    row = (await conn.execute(_ADVANCE, {"user": user_id, "n": float(n)})).first()
    if row is None:
        raise NoSuchUser(user_id)
    last, weight = float(row[0]), float(row[1])
    step = 1.0 / weight
    return Turn(last - n * step, step, row[2], row[3], row[4])
