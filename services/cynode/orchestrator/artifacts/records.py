"""Artifact rows: written with the job's result, marked stored by the upload, read by
the gateway (SPEC §2.11, §7.11). None of this is a status: a job's and a task's status
stay the lifecycle package's alone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cynode.jobs.v1 import job_pb2
from cynode.orchestrator.store.models import new_id
from cynode.orchestrator.store.tables import ARTIFACT_SETS, ARTIFACTS, insert_ignoring_duplicates

MAX_REASON_CHARS = 255


class Reported(Protocol):
    node_id: str
    result: job_pb2.JobResult


async def record_sets(
    conn: AsyncConnection,
    results: Sequence[Reported],
    tasks_by_job: dict[str, str],
    now: datetime,
) -> None:
    """The artifact set of every result whose job exists, once per (job, attempt): a
    replayed result inserts nothing new. A result without a set (an older node, a
    canceled job) records an empty one, so its attempt counts as complete."""
    sets: list[dict[str, object]] = []
    files: list[dict[str, object]] = []
    for event in results:
        res = event.result
        task_id = tasks_by_job.get(res.job_id)
        if task_id is None:
            continue
        found = res.artifacts
        sets.append(
            {
                "id": new_id(),
                "task_id": task_id,
                "job_id": res.job_id,
                "attempt": res.attempt,
                "count": len(found.artifacts),
                "truncated": found.truncated,
                "truncated_reason": found.truncated_reason[:MAX_REASON_CHARS] or None,
                "created_at": now,
            }
        )
        for artifact in found.artifacts:
            files.append(
                {
                    "id": artifact.artifact_id,
                    "task_id": task_id,
                    "job_id": res.job_id,
                    "attempt": res.attempt,
                    "node_id": event.node_id,
                    "name": artifact.name,
                    "size_bytes": artifact.size_bytes,
                    "content_type": artifact.content_type[:255],
                    "sha256": artifact.sha256.lower(),
                    "stored_at": None,
                    "created_at": now,
                }
            )
    dialect = conn.dialect.name
    if sets:
        await conn.execute(insert_ignoring_duplicates(dialect, ARTIFACT_SETS), sets)
    if files:
        await conn.execute(insert_ignoring_duplicates(dialect, ARTIFACTS), files)


@dataclass(frozen=True)
class UploadTarget:
    artifact_id: str
    sha256: str
    size_bytes: int
    stored: bool


_FIND_UPLOAD = sa.select(
    ARTIFACTS.c.id, ARTIFACTS.c.sha256, ARTIFACTS.c.size_bytes, ARTIFACTS.c.stored_at
).where(
    ARTIFACTS.c.id == sa.bindparam("b_id"),
    ARTIFACTS.c.job_id == sa.bindparam("b_job"),
    ARTIFACTS.c.attempt == sa.bindparam("b_attempt"),
    ARTIFACTS.c.node_id == sa.bindparam("b_node"),
)


async def find_upload(
    conn: AsyncConnection, node_id: str, job_id: str, attempt: int, artifact_id: str
) -> UploadTarget | None:
    """The artifact a node may upload: announced in a result of that node's."""
    row = (
        await conn.execute(
            _FIND_UPLOAD,
            {"b_id": artifact_id, "b_job": job_id, "b_attempt": attempt, "b_node": node_id},
        )
    ).first()
    if row is None:
        return None
    return UploadTarget(row[0], row[1], int(row[2]), row[3] is not None)


async def mark_stored(conn: AsyncConnection, artifact_id: str, now: datetime) -> None:
    await conn.execute(
        ARTIFACTS.update()
        .where(ARTIFACTS.c.id == artifact_id, ARTIFACTS.c.stored_at.is_(None))
        .values(stored_at=now)
    )


async def mark_stored_by_sha(conn: AsyncConnection, sha256: str, now: datetime) -> list[str]:
    """Every artifact whose blob this is and that was not marked yet (the same content
    from another job is stored once); their task ids."""
    rows = await conn.execute(
        sa.select(ARTIFACTS.c.task_id).where(
            ARTIFACTS.c.sha256 == sha256, ARTIFACTS.c.stored_at.is_(None)
        )
    )
    tasks = sorted({r[0] for r in rows})
    await conn.execute(
        ARTIFACTS.update()
        .where(ARTIFACTS.c.sha256 == sha256, ARTIFACTS.c.stored_at.is_(None))
        .values(stored_at=now)
    )
    return tasks


async def lock_content(conn: AsyncConnection, sha256: str) -> None:
    """Holds, until `conn`'s transaction ends, the one lock under which a blob is judged
    (present, so its rows are marked stored; or named by no row, so it is deleted).
    Without it a sweep could find no row, an upload then find the blob and mark a new
    row stored, and the sweep delete the blob under it (a stored artifact without bytes).
    Postgres: a transaction-scoped advisory lock keyed by the hash's first 63 bits, so
    every replica takes the same one. SQLite: a write (that changes nothing) takes the
    database's one write lock; SQLite is served by one process."""
    if conn.dialect.name == "postgresql":
        key = int(sha256[:16], 16) >> 1
        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))
    else:
        await conn.execute(
            ARTIFACTS.update().where(ARTIFACTS.c.sha256 == sha256).values(sha256=sha256)
        )


async def unreferenced(conn: AsyncConnection, sha256s: frozenset[str] | set[str]) -> set[str]:
    """Those of `sha256s` no artifact row names any more: their blobs may go."""
    if not sha256s:
        return set()
    named = {
        row[0]
        for row in await conn.execute(
            sa.select(ARTIFACTS.c.sha256).where(ARTIFACTS.c.sha256.in_(sorted(sha256s))).distinct()
        )
    }
    return set(sha256s) - named
