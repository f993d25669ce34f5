"""Heartbeats renew the lease of EVERY job a node runs. A regression test: with two or
more running jobs the renewal was one executemany UPDATE with an expanding IN (...)
parameter, which SQLAlchemy refuses; the beat was dropped, the leases ran out, and the
jobs were requeued under a live node (seen as a task stuck `running` in the fault
tests)."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from cynode.orchestrator.simnode import SimNode
from cynode.orchestrator.simnode.harness import (
    ControlPlaneServer,
    enqueue_jobs,
    make_user,
)
from cynode.orchestrator.store.tables import ATTEMPTS, JOBS
from cynode.testing import until

from .test_dispatch import PSK, Gate


async def test_heartbeats_renew_leases_of_two_running_jobs(server: ControlPlaneServer) -> None:
    gate = Gate()
    node = SimNode(server.target, PSK, "busy", slots=2, runtime=gate)
    await node.start()
    user = await make_user(server.engine)
    pairs = await enqueue_jobs(server.engine, user, 2, bus=server.bus)
    await until(lambda: len(gate.started) == 2, what="2 running")

    async def leases() -> dict[str, object]:
        async with server.engine.connect() as conn:
            rows = await conn.execute(sa.select(JOBS.c.id, JOBS.c.lease_expires_at))
            return {r.id: r.lease_expires_at for r in rows}

    first = await leases()
    # Several heartbeats (1 s apart) later both leases must have moved on.
    await asyncio.sleep(3.5)
    later = await leases()
    assert all(later[job] > first[job] for _, job in pairs), (first, later)  # type: ignore[operator]
    async with server.engine.connect() as conn:
        jobs = list(await conn.execute(sa.select(JOBS.c.attempt, JOBS.c.status)))
        attempts = list(await conn.execute(sa.select(ATTEMPTS.c.status)))
    assert sorted((j.attempt, j.status) for j in jobs) == [(1, "running"), (1, "running")]
    assert [a.status for a in attempts] == ["running", "running"]
    gate.release.set()

    async def done() -> bool:
        async with server.engine.connect() as conn:
            rows = await conn.execute(sa.select(JOBS.c.status))
            return {r.status for r in rows} == {"completed"}

    await until(done, what="both completed")
    await node.stop()


async def test_two_leases_expiring_at_once_are_both_requeued(server: ControlPlaneServer) -> None:
    """The expiry sweep marks attempts lost in one executemany; with an expanding IN it
    failed for 2+ rows and wedged the scheduler (no job was dispatched again)."""
    gate = Gate()
    doomed = SimNode(server.target, PSK, "doomed2", slots=2, runtime=gate)
    await doomed.start()
    user = await make_user(server.engine)
    await enqueue_jobs(server.engine, user, 2, bus=server.bus)
    await until(lambda: len(gate.started) == 2, what="2 running on doomed")
    survivor = SimNode(server.target, PSK, "survivor2", slots=2)
    await survivor.start()
    await doomed.kill()

    async def done() -> bool:
        async with server.engine.connect() as conn:
            rows = await conn.execute(sa.select(JOBS.c.status, JOBS.c.attempt))
            return sorted((r.status, r.attempt) for r in rows) == [("completed", 2)] * 2

    await until(done, what="both requeued and completed on the survivor")
    async with server.engine.connect() as conn:
        rows = list(await conn.execute(sa.select(ATTEMPTS.c.attempt, ATTEMPTS.c.status)))
    assert sorted((r.attempt, r.status) for r in rows) == [
        (1, "lost"),
        (1, "lost"),
        (2, "completed"),
        (2, "completed"),
    ]
    await survivor.stop()
