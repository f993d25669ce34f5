"""The running-jobs quota in the claim (SPEC §3.9): a user at their limit gets no new
job until one of theirs ends; their queued jobs wait, and other users' go ahead.

Off (no query at all) while neither the configured default nor any user's own value
sets a limit; whether any user has one is looked up again every few seconds, so a
limit set on another replica applies here within that time."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from cynode.orchestrator.lifecycle import Status
from cynode.orchestrator.store.tables import JOBS, TASKS, USERS

RECHECK_SECONDS = 2.0

_ANY_OWN = sa.select(sa.exists().where(USERS.c.max_running_jobs.is_not(None)))
# Jobs a node holds or is about to: running, or claimed and not started yet.
_HELD = (
    sa.select(TASKS.c.user_id, USERS.c.max_running_jobs, sa.func.count())
    .select_from(
        JOBS.join(TASKS, TASKS.c.id == JOBS.c.task_id).join(USERS, USERS.c.id == TASKS.c.user_id)
    )
    .where(
        sa.or_(
            JOBS.c.status == Status.RUNNING,
            sa.and_(JOBS.c.status == Status.QUEUED, JOBS.c.node_id.is_not(None)),
        )
    )
    .group_by(TASKS.c.user_id, USERS.c.max_running_jobs)
)


def not_blocked(pg: bool) -> sa.ColumnElement[bool]:
    """The task's user is not one of those bound as `blocked` (a list)."""
    if pg:
        return TASKS.c.user_id != sa.all_(
            sa.bindparam("blocked", type_=postgresql.ARRAY(sa.String))
        )
    each = sa.func.json_each(sa.bindparam("blocked", type_=sa.JSON)).table_valued("value")
    return TASKS.c.user_id.not_in(sa.select(each.c.value))


class Room(NamedTuple):
    """What one round may still start per user (users absent: their whole limit)."""

    default: int
    left: dict[str, int]
    blocked: list[str]

    def take(self, user_id: str, own: int | None) -> bool:
        """Counts one more job of `user_id` (whose own limit is `own`) if it fits."""
        limit = self.default if own is None else own
        if not limit:
            return True
        left = self.left.get(user_id, limit)
        if left <= 0:
            return False
        self.left[user_id] = left - 1
        return True


class RunningCaps:
    def __init__(self, default: int) -> None:
        self.default = default
        self._own = False
        self._checked = float("-inf")

    async def room(self, conn: AsyncConnection) -> Room | None:
        """None while no limit is set anywhere; else what each user may still start."""
        if not self.default and time.monotonic() - self._checked >= RECHECK_SECONDS:
            self._own = bool((await conn.execute(_ANY_OWN)).scalar())
            self._checked = time.monotonic()
        if not self.default and not self._own:
            return None
        return _room(self.default, await conn.execute(_HELD))


def _room(default: int, held: Iterable[Any]) -> Room:
    left: dict[str, int] = {}
    blocked: list[str] = []
    for user_id, own, n in held:
        limit = default if own is None else own
        if limit:
            left[user_id] = limit - n
            if n >= limit:
                blocked.append(user_id)
    return Room(default, left, blocked)
