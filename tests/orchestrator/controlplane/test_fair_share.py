"""Fair share in the claim (SPEC §3.9), over real gRPC with simulated nodes, on SQLite
and Postgres: free slots go round-robin across users with queued work, in proportion to
their weights, oldest first within a user."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from cynode.jobs.v1 import job_pb2
from cynode.orchestrator.simnode import SimNode
from cynode.orchestrator.simnode.harness import (
    ControlPlaneServer,
    enqueue_jobs,
    make_user,
    settings_for_tests,
)
from cynode.orchestrator.store.tables import JOBS, TASKS, USERS
from cynode.testing import until

PSK = "test-psk-0123456789"


class Recorder:
    """A runtime that notes the order jobs start in; each runs until released (all at
    once with `hold=False`)."""

    def __init__(self, *, hold: bool = False) -> None:
        self.started: list[str] = []
        self.hold = hold
        self._gates: dict[str, asyncio.Event] = {}

    async def __call__(self, spec: job_pb2.JobSpec) -> job_pb2.JobResult:
        self.started.append(spec.job_id)
        if self.hold:
            await self._gates.setdefault(spec.job_id, asyncio.Event()).wait()
        return job_pb2.JobResult(status=job_pb2.JOB_STATUS_COMPLETED, exit_code=0)

    def release(self, job_id: str) -> None:
        self._gates.setdefault(job_id, asyncio.Event()).set()


async def _weight(engine: AsyncEngine, user: str, weight: float) -> None:
    async with engine.begin() as conn:
        await conn.execute(USERS.update().where(USERS.c.id == user).values(weight=weight))


def _owners(started: list[str], jobs: dict[str, str]) -> str:
    return "".join(jobs[j] for j in started)


async def test_slots_go_round_robin_by_weight(server: ControlPlaneServer) -> None:
    engine = server.engine
    a, b, c = [await make_user(engine) for _ in range(3)]
    await _weight(engine, c, 2.0)
    owner: dict[str, str] = {}
    for user, letter, n in ((a, "A", 6), (b, "B", 3), (c, "C", 4)):
        for _, job in await enqueue_jobs(engine, user, n):
            owner[job] = letter
    rec = Recorder()
    node = SimNode(server.target, PSK, "fair-1", slots=1, runtime=rec)
    await node.start()
    try:
        await until(lambda: len(rec.started) == 13, what="all 13 jobs ran")
    finally:
        await node.stop()
    # Keys: A 0..5, B 0..2, C (weight 2) 0, .5, 1, 1.5; ties go to the oldest job.
    assert _owners(rec.started, owner) == "ABCCABCCABAAA"
    # Oldest first within a user.
    for letter in "ABC":
        mine = [j for j in rec.started if owner[j] == letter]
        assert mine == sorted(mine)


async def test_newcomer_runs_next_not_after_the_backlog(server: ControlPlaneServer) -> None:
    engine = server.engine
    a, b = await make_user(engine), await make_user(engine)
    rec = Recorder(hold=True)
    node = SimNode(server.target, PSK, "fair-2", slots=2, runtime=rec)
    await node.start()
    try:
        backlog = [j for _, j in await enqueue_jobs(engine, a, 20, bus=server.bus)]
        await until(lambda: len(rec.started) == 2, what="two of A's jobs running")
        [(_, newcomer)] = await enqueue_jobs(engine, b, 1, bus=server.bus)
        rec.release(rec.started[0])
        await until(lambda: len(rec.started) == 3, what="a third job started")
        assert rec.started[2] == newcomer
        assert rec.started[:2] == backlog[:2]
        # A's backlog then carries on in order.
        for job in backlog:
            rec.release(job)
        rec.release(newcomer)
        await until(lambda: len(rec.started) == 21, what="everything ran")
        assert [j for j in rec.started if j != newcomer] == backlog
    finally:
        for job in rec.started:
            rec.release(job)
        await node.stop()


async def test_an_idle_user_does_not_carry_old_turns(server: ControlPlaneServer) -> None:
    """A user whose backlog drained starts again at the current virtual time: neither
    ahead of others (no banked credit) nor behind them (no debt from the past)."""
    engine = server.engine
    a, b = await make_user(engine), await make_user(engine)
    rec = Recorder()
    node = SimNode(server.target, PSK, "fair-3", slots=1, runtime=rec)
    await node.start()
    try:
        await enqueue_jobs(engine, a, 10, bus=server.bus)
        await until(lambda: len(rec.started) == 10, what="A's first backlog ran")
        await node.stop()
        owner: dict[str, str] = {}
        for user, letter in ((b, "B"), (a, "A")):
            for _, job in await enqueue_jobs(engine, user, 3):
                owner[job] = letter
        rec.started.clear()
        node = SimNode(server.target, PSK, "fair-3", slots=1, runtime=rec)
        await node.start()
        await until(lambda: len(rec.started) == 6, what="both users' jobs ran")
        assert _owners(rec.started, owner) == "BABABA"
    finally:
        await node.stop()


async def test_keys_come_from_the_users_row(server: ControlPlaneServer) -> None:
    """The user's finish tag moves on by n / weight with each enqueue."""
    engine = server.engine
    a = await make_user(engine)
    await _weight(engine, a, 4.0)
    await enqueue_jobs(engine, a, 6)
    async with engine.connect() as conn:
        last = (await conn.execute(sa.select(USERS.c.fair_last).where(USERS.c.id == a))).scalar()
    assert last == 1.5


async def _own_cap(engine: AsyncEngine, user: str, cap: int | None) -> None:
    async with engine.begin() as conn:
        await conn.execute(USERS.update().where(USERS.c.id == user).values(max_running_jobs=cap))


async def test_a_user_at_their_running_limit_waits_others_go_ahead(
    server: ControlPlaneServer,
) -> None:
    engine = server.engine
    a, b = await make_user(engine), await make_user(engine)
    await _own_cap(engine, a, 1)
    owner: dict[str, str] = {}
    for user, letter in ((a, "A"), (b, "B")):
        for _, job in await enqueue_jobs(engine, user, 3):
            owner[job] = letter
    rec = Recorder(hold=True)
    node = SimNode(server.target, PSK, "cap-1", slots=3, runtime=rec)
    await node.start()
    try:
        await until(lambda: len(rec.started) == 3, what="three jobs started")
        await asyncio.sleep(0.3)  # a fourth would have been dispatched by now
        assert sorted(_owners(rec.started, owner)) == ["A", "B", "B"]
        # Another user's job ending frees a slot, but A is still at their limit.
        rec.release(next(j for j in rec.started if owner[j] == "B"))
        await until(lambda: len(rec.started) == 4, what="B's third job started")
        assert owner[rec.started[3]] == "B"
        await asyncio.sleep(0.3)
        assert len(rec.started) == 4
        # A's running job ending lets their next one start.
        rec.release(next(j for j in rec.started if owner[j] == "A"))
        await until(lambda: len(rec.started) == 5, what="A's second job started")
        assert owner[rec.started[4]] == "A"
        # Lifting the limit (NULL: the default, none) lets the rest through.
        await _own_cap(engine, a, None)
        for job in rec.started:
            rec.release(job)
        await until(lambda: len(rec.started) == 6, timeout=30, what="everything started")
    finally:
        for job in rec.started:
            rec.release(job)
        await node.stop()


async def test_the_configured_default_limit_applies(engine: AsyncEngine) -> None:
    srv = await ControlPlaneServer(engine, settings_for_tests(max_running_jobs=2)).start()
    rec = Recorder(hold=True)
    node = SimNode(srv.target, PSK, "cap-2", slots=4, runtime=rec)
    try:
        a, b = await make_user(engine), await make_user(engine)
        await _own_cap(engine, b, 3)  # a user's own value wins over the default
        await enqueue_jobs(engine, a, 4)
        await enqueue_jobs(engine, b, 4)
        await node.start()
        await until(lambda: len(rec.started) == 4, what="four jobs started")
        await asyncio.sleep(0.3)
        assert len(rec.started) == 4
        async with engine.connect() as conn:
            rows = await conn.execute(
                sa.select(TASKS.c.user_id, sa.func.count())
                .select_from(JOBS.join(TASKS, TASKS.c.id == JOBS.c.task_id))
                .where(JOBS.c.node_id.is_not(None))
                .group_by(TASKS.c.user_id)
            )
            held: dict[str, int] = {r[0]: r[1] for r in rows}
        assert held == {a: 2, b: 2}  # the node's four slots: A at 2, B within its 3
    finally:
        for job in rec.started:
            rec.release(job)
        await node.stop()
        await srv.stop()


async def test_inference_jobs_take_turns_too(server: ControlPlaneServer) -> None:
    """The inference claim has the same order: round-robin across users on the nodes
    that can take inference jobs."""
    engine = server.engine
    a, b = await make_user(engine), await make_user(engine)
    owner: dict[str, str] = {}
    for user, letter, n in ((a, "A", 4), (b, "B", 2)):
        for _, job in await enqueue_jobs(engine, user, n, needs_inference=True):
            owner[job] = letter
    rec = Recorder()
    node = SimNode(server.target, PSK, "fair-inf", slots=1, inference=True, runtime=rec)
    await node.start()
    try:
        await until(lambda: len(rec.started) == 6, what="all six inference jobs ran")
    finally:
        await node.stop()
    assert _owners(rec.started, owner) == "ABABAA"
