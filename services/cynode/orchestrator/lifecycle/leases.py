"""Leases: how long the node holding a job's current attempt is trusted to be alive.

Heartbeats renew them; one that runs out requeues the job for a new attempt, or fails it
`node_lost` once the attempts are used up. Start-up holds every live lease for two leases
(no node could renew while no orchestrator ran).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cynode.orchestrator.lifecycle.status import LIVE, AttemptStatus, Reason, Status
from cynode.orchestrator.store.tables import ATTEMPTS, JOBS, TASKS, Many, chunked

_RENEW = Many(
    JOBS.update()
    .where(
        JOBS.c.id == sa.bindparam("b_id"),
        JOBS.c.attempt == sa.bindparam("b_attempt"),
        # Not .in_(LIVE): an expanding IN cannot go into an executemany, and this
        # UPDATE runs once per renewed job.
        sa.or_(*(JOBS.c.status == status for status in LIVE)),
    )
    .values(lease_expires_at=sa.bindparam("b_lease"))
)
# At most this many expired leases are handled per sweep; the next sweep takes the rest.
SWEEP_LIMIT = 1000


async def hold(conn: AsyncConnection, floor: datetime) -> int:
    """Moves every live lease that ends before `floor` to `floor`; how many it moved."""
    held = await conn.execute(
        JOBS.update()
        .where(
            JOBS.c.status.in_(LIVE),
            JOBS.c.node_id.is_not(None),
            JOBS.c.lease_expires_at < floor,
        )
        .values(lease_expires_at=floor)
    )
    return int(held.rowcount)


async def renew(conn: AsyncConnection, renewals: Sequence[tuple[str, int, datetime]]) -> None:
    """Each (job_id, attempt, until): that attempt's lease, if it is still the job's
    current attempt and the job is live, runs until `until`."""
    if renewals:
        await _RENEW.run(
            conn, [{"b_id": j, "b_attempt": a, "b_lease": until} for j, a, until in renewals]
        )


async def extend(conn: AsyncConnection, job_ids: Sequence[str], until: datetime) -> None:
    """The leases of jobs a reconnecting node still holds run until `until`."""
    for part in chunked(job_ids):
        await conn.execute(JOBS.update().where(JOBS.c.id.in_(part)).values(lease_expires_at=until))


async def lapse(conn: AsyncConnection, job_ids: Sequence[str], now: datetime) -> None:
    """Jobs assigned to a node that, reconnecting, does not hold them (it never got them,
    or lost them in a restart): their leases run out now, so the next sweep requeues them."""
    for part in chunked(job_ids):
        await conn.execute(
            JOBS.update()
            .where(JOBS.c.id.in_(part))
            .values(lease_expires_at=now - timedelta(seconds=1))
        )


@dataclass(frozen=True)
class Expired:
    """What a sweep did: the jobs requeued and failed, and every lapsed copy as
    (job_id, attempt, node_id) for telling its node to drop it."""

    requeued: int
    failed: int
    task_ids: set[str]
    copies: list[tuple[str, int, str]]


async def expire(conn: AsyncConnection, now: datetime, max_attempts: int, *, lock: bool) -> Expired:
    """Requeues (a new attempt at the next claim) or fails `node_lost` the live jobs whose
    lease ran out before `now`, and marks their attempts `lost`. `lock` (Postgres)
    skips rows another replica is sweeping."""
    stmt = (
        sa.select(JOBS.c.id, JOBS.c.task_id, JOBS.c.attempt, JOBS.c.node_id)
        .where(JOBS.c.status.in_(LIVE), JOBS.c.node_id.is_not(None), JOBS.c.lease_expires_at < now)
        .order_by(JOBS.c.lease_expires_at)
        .limit(SWEEP_LIMIT)
    )
    if lock:
        stmt = stmt.with_for_update(skip_locked=True, of=JOBS)
    rows = list(await conn.execute(stmt))
    if not rows:
        return Expired(0, 0, set(), [])
    requeue = [r for r in rows if r.attempt < max_attempts]
    lost = [r for r in rows if r.attempt >= max_attempts]
    for part in chunked(requeue):
        await _requeue(conn, part, now)
    for part in chunked(lost):
        await _fail_lost(conn, part, now)
    await conn.execute(
        ATTEMPTS.update()
        .where(
            ATTEMPTS.c.job_id == sa.bindparam("b_job"),
            ATTEMPTS.c.attempt == sa.bindparam("b_attempt"),
            # No .in_(): an expanding IN cannot go into this executemany.
            sa.or_(
                ATTEMPTS.c.status == AttemptStatus.ASSIGNED,
                ATTEMPTS.c.status == AttemptStatus.RUNNING,
            ),
        )
        .values(status=AttemptStatus.LOST, reason=Reason.NODE_LOST),
        [{"b_job": r.id, "b_attempt": r.attempt} for r in rows],
    )
    return Expired(
        len(requeue),
        len(lost),
        {r.task_id for r in rows},
        [(r.id, r.attempt, r.node_id) for r in rows],
    )


async def _requeue(conn: AsyncConnection, rows: Iterable[Any], now: datetime) -> None:
    rows = list(rows)
    await conn.execute(
        JOBS.update()
        .where(JOBS.c.id.in_([r.id for r in rows]))
        .values(
            status=Status.QUEUED,
            node_id=None,
            lease_expires_at=None,
            started_at=None,
            updated_at=now,
        )
    )
    await conn.execute(
        TASKS.update()
        .where(TASKS.c.id.in_([r.task_id for r in rows]), TASKS.c.status == Status.RUNNING)
        .values(status=Status.QUEUED, updated_at=now)
    )


async def _fail_lost(conn: AsyncConnection, rows: Iterable[Any], now: datetime) -> None:
    rows = list(rows)
    await conn.execute(
        JOBS.update()
        .where(JOBS.c.id.in_([r.id for r in rows]))
        .values(
            status=Status.FAILED,
            reason=Reason.NODE_LOST,
            lease_expires_at=None,
            ended_at=now,
            updated_at=now,
        )
    )
    await conn.execute(
        TASKS.update()
        .where(TASKS.c.id.in_([r.task_id for r in rows]), TASKS.c.status.in_(LIVE))
        .values(status=Status.FAILED, reason=Reason.NODE_LOST, updated_at=now)
    )


async def reclaim(
    conn: AsyncConnection, node_id: str, job_id: str, attempt: int, task_id: str, now: datetime
) -> bool:
    """Gives a node back the copy it still runs of a job whose lease ran out while the node
    was away (the job requeued, not yet claimed again): cheaper than running it twice.
    The conditional UPDATE loses cleanly to a scheduler that claimed it first."""
    taken = await conn.execute(
        JOBS.update()
        .where(
            JOBS.c.id == job_id,
            JOBS.c.status == Status.QUEUED,
            JOBS.c.node_id.is_(None),
            JOBS.c.attempt == attempt,
        )
        .values(node_id=node_id, status=Status.RUNNING, updated_at=now)
    )
    if taken.rowcount != 1:
        return False
    await conn.execute(
        ATTEMPTS.update()
        .where(
            ATTEMPTS.c.job_id == job_id,
            ATTEMPTS.c.attempt == attempt,
            ATTEMPTS.c.status == AttemptStatus.LOST,
        )
        .values(status=AttemptStatus.RUNNING, reason=None)
    )
    await conn.execute(
        TASKS.update()
        .where(TASKS.c.id == task_id, TASKS.c.status == Status.QUEUED)
        .values(status=Status.RUNNING, updated_at=now)
    )
    return True
