"""Cancel: a user stops a task. Queued jobs end at once; a job a node holds is marked
canceled with `cancel_requested`, the outbox flag the control plane clears as it tells
the node to stop the container (the node's result then fills in the output)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cynode.orchestrator.lifecycle.status import TERMINAL, Reason, Status
from cynode.orchestrator.store.tables import JOBS, TASKS, chunked


@dataclass(frozen=True)
class Canceled:
    """`done`: the task was live and is canceled now (else it had already ended);
    `stop_requested`: a node holds one of its jobs and must be told to stop it."""

    done: bool
    stop_requested: bool


async def cancel_task(conn: AsyncConnection, task_id: str, now: datetime) -> Canceled:
    changed = await conn.execute(
        TASKS.update()
        .where(TASKS.c.id == task_id, TASKS.c.status.notin_(TERMINAL))
        .values(status=Status.CANCELED, reason=Reason.CANCELED, updated_at=now)
    )
    if changed.rowcount != 1:
        return Canceled(done=False, stop_requested=False)
    await conn.execute(
        JOBS.update()
        .where(
            JOBS.c.task_id == task_id,
            JOBS.c.status == Status.QUEUED,
            JOBS.c.node_id.is_(None),
        )
        .values(status=Status.CANCELED, reason=Reason.CANCELED, ended_at=now, updated_at=now)
    )
    held = await conn.execute(
        JOBS.update()
        .where(JOBS.c.task_id == task_id, JOBS.c.status.notin_(TERMINAL))
        .values(
            status=Status.CANCELED,
            cancel_requested=True,
            reason=Reason.CANCELED,
            updated_at=now,
        )
    )
    return Canceled(done=True, stop_requested=held.rowcount > 0)


async def take_cancels(conn: AsyncConnection, node_ids: Collection[str]) -> list[Any]:
    """The canceled jobs held by the nodes `node_ids` that have not been told yet, as rows
    (id, attempt, node_id); taking them clears their outbox flag, so each is told once."""
    rows = [
        r
        for r in await conn.execute(
            sa.select(JOBS.c.id, JOBS.c.attempt, JOBS.c.node_id).where(
                JOBS.c.status == Status.CANCELED,
                JOBS.c.cancel_requested.is_(True),
                JOBS.c.node_id.is_not(None),
            )
        )
        if r.node_id in node_ids
    ]
    for part in chunked(rows):
        await conn.execute(
            JOBS.update().where(JOBS.c.id.in_([r.id for r in part])).values(cancel_requested=False)
        )
    return rows
