"""Delete: the end of an ended task's life (SPEC §2.12). The task, its jobs, their
attempts, output chunks and attachments, and its artifact rows go in one transaction;
a task that is still live is refused (cancel it first), so no node is left running a
job the store no longer knows. The artifacts' blobs are the caller's to remove, after
the commit, once no other row names them."""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cynode.orchestrator.lifecycle.status import TERMINAL
from cynode.orchestrator.store.tables import (
    ARTIFACT_SETS,
    ARTIFACTS,
    ATTACHMENTS,
    ATTEMPTS,
    CHUNKS,
    JOBS,
    TASKS,
)


@dataclass(frozen=True)
class Deleted:
    """`done`: the task is gone; else `status` says why not (it is still live)."""

    done: bool
    status: str
    sha256s: frozenset[str] = field(default_factory=frozenset)


async def delete_task(conn: AsyncConnection, task_id: str) -> Deleted:
    status = (
        await conn.execute(sa.select(TASKS.c.status).where(TASKS.c.id == task_id).with_for_update())
    ).scalar_one_or_none()
    if status is None:
        return Deleted(False, "")
    if status not in TERMINAL:
        return Deleted(False, status)
    jobs = sa.select(JOBS.c.id).where(JOBS.c.task_id == task_id).scalar_subquery()
    shas = {
        row[0]
        for row in await conn.execute(
            sa.select(ARTIFACTS.c.sha256).where(ARTIFACTS.c.task_id == task_id).distinct()
        )
    }
    await conn.execute(ARTIFACTS.delete().where(ARTIFACTS.c.task_id == task_id))
    await conn.execute(ARTIFACT_SETS.delete().where(ARTIFACT_SETS.c.task_id == task_id))
    await conn.execute(CHUNKS.delete().where(CHUNKS.c.job_id.in_(jobs)))
    await conn.execute(ATTEMPTS.delete().where(ATTEMPTS.c.job_id.in_(jobs)))
    await conn.execute(ATTACHMENTS.delete().where(ATTACHMENTS.c.task_id == task_id))
    await conn.execute(JOBS.delete().where(JOBS.c.task_id == task_id))
    await conn.execute(TASKS.delete().where(TASKS.c.id == task_id))
    return Deleted(True, status, frozenset(shas))
