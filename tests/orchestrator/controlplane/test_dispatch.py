"""Dispatch over real gRPC with simulated nodes, on SQLite and Postgres."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from cynode.controlplane.v1 import dispatch_pb2, dispatch_pb2_grpc
from cynode.jobs.v1 import job_pb2
from cynode.orchestrator import lifecycle
from cynode.orchestrator.controlplane.ingest import Result
from cynode.orchestrator.events import JOBS as JOBS_TOPIC
from cynode.orchestrator.events import task_topic
from cynode.orchestrator.simnode import SimNode
from cynode.orchestrator.simnode.harness import (
    ControlPlaneServer,
    enqueue_jobs,
    make_user,
    settings_for_tests,
)
from cynode.orchestrator.store.models import utcnow
from cynode.orchestrator.store.tables import ATTEMPTS, CHUNKS, JOBS, NODES, TASKS
from cynode.testing import until

PSK = "test-psk-0123456789"


class Gate:
    """A runtime whose jobs run until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started: list[str] = []

    async def __call__(self, spec: job_pb2.JobSpec) -> job_pb2.JobResult:
        self.started.append(spec.job_id)
        await self.release.wait()
        return job_pb2.JobResult(
            status=job_pb2.JOB_STATUS_COMPLETED, exit_code=0, stdout=f"done {spec.job_id}".encode()
        )


async def _statuses(engine: AsyncEngine, table: sa.Table = JOBS) -> Counter[str]:
    async with engine.connect() as conn:
        return Counter(r.status for r in await conn.execute(sa.select(table.c.status)))


async def _job(engine: AsyncEngine, job_id: str) -> sa.Row[tuple[object, ...]]:
    async with engine.connect() as conn:
        row = (await conn.execute(sa.select(JOBS).where(JOBS.c.id == job_id))).one()
    return row


async def _job_status(engine: AsyncEngine, job_id: str, status: str) -> bool:
    return bool((await _job(engine, job_id)).status == status)


async def _all_done(engine: AsyncEngine, n: int) -> bool:
    return (await _statuses(engine))["completed"] == n


@dataclass
class OneRunning:
    """A control plane with one job running on one simulated node, held by a Gate."""

    srv: ControlPlaneServer
    node: SimNode
    gate: Gate
    task_id: str
    job_id: str


async def _one_running(
    engine: AsyncEngine, lease_seconds: int, slug: str, **overrides: Any
) -> OneRunning:
    settings = settings_for_tests(lease_seconds=lease_seconds, **overrides)
    srv = await ControlPlaneServer(engine, settings).start()
    gate = Gate()
    node = SimNode(srv.target, PSK, slug, slots=1, runtime=gate)
    await node.start()
    user = await make_user(engine)
    [(task_id, job_id)] = await enqueue_jobs(engine, user, 1, bus=srv.bus)
    await until(lambda: gate.started == [job_id], what="running")
    return OneRunning(srv, node, gate, task_id, job_id)


async def test_jobs_spread_by_free_slots_and_complete(server: ControlPlaneServer) -> None:
    gate_a, gate_b = Gate(), Gate()
    a = SimNode(server.target, PSK, "a", slots=3, runtime=gate_a)
    b = SimNode(server.target, PSK, "b", slots=1, runtime=gate_b)
    await a.start()
    await b.start()
    user = await make_user(server.engine)
    pairs = await enqueue_jobs(server.engine, user, 5, bus=server.bus)
    await until(lambda: len(gate_a.started) + len(gate_b.started) == 4, what="4 running")
    assert (len(gate_a.started), len(gate_b.started)) == (3, 1)

    async def four_running() -> bool:
        return await _statuses(server.engine, TASKS) == {"running": 4, "queued": 1}

    await until(four_running, what="tasks running")
    watched = pairs[0][0]
    async with server.bus.subscribe(task_topic(watched)) as updates:
        gate_a.release.set()
        gate_b.release.set()
        await until(lambda: _all_done(server.engine, 5), what="all completed")
        assert not updates.empty()
    async with server.engine.connect() as conn:
        tasks = await _statuses(server.engine, TASKS)
        assert tasks == {"completed": 5}
        attempts = list(await conn.execute(sa.select(ATTEMPTS)))
        chunks = list(await conn.execute(sa.select(CHUNKS)))
    assert len(attempts) == 5 and {r.status for r in attempts} == {"completed"}
    assert {r.attempt for r in attempts} == {1}
    assert len(chunks) == 5 and all(c.data.startswith(b"done ") for c in chunks)
    job = await _job(server.engine, pairs[0][1])
    assert job.stdout == f"done {pairs[0][1]}".encode() and job.exit_code == 0
    assert job.started_at is not None and job.ended_at is not None
    await until(lambda: len(a.acked) + len(b.acked) == 5, what="results acked")
    assert not a.spool and not b.spool
    await a.stop()
    await b.stop()


async def test_a_plain_job_prefers_a_node_with_a_warm_sandbox(server: ControlPlaneServer) -> None:
    # "cold" has more free slots, so without warm sandboxes it would get the first job.
    gate_cold, gate_warm = Gate(), Gate()
    cold = SimNode(server.target, PSK, "cold", slots=3, runtime=gate_cold)
    warm = SimNode(server.target, PSK, "warm", slots=2, runtime=gate_warm, warm_ready=1)
    await cold.start()
    await warm.start()

    def both_ready() -> bool:
        sessions = list(server.cp.registry)
        return len(sessions) == 2 and all(s.credits > 0 for s in sessions)

    await until(both_ready, what="both connected with credits")
    user = await make_user(server.engine)
    [(_, first)] = await enqueue_jobs(server.engine, user, 1, bus=server.bus)
    await until(lambda: gate_warm.started == [first], what="first job on the warm node")
    # Its one warm sandbox is spoken for: the next job goes by free slots again.
    [(_, second)] = await enqueue_jobs(server.engine, user, 1, bus=server.bus)
    await until(lambda: gate_cold.started == [second], what="second job by free slots")
    gate_cold.release.set()
    gate_warm.release.set()
    await until(lambda: _all_done(server.engine, 2), what="all completed")
    await cold.stop()
    await warm.stop()


async def test_inference_jobs_only_reach_inference_nodes(server: ControlPlaneServer) -> None:
    plain = SimNode(server.target, PSK, "plain", slots=4)
    smart = SimNode(server.target, PSK, "smart", slots=1, inference=True)
    await plain.start()
    await smart.start()
    user = await make_user(server.engine)
    inf = await enqueue_jobs(server.engine, user, 3, input_mode="prompt", needs_inference=True)
    await enqueue_jobs(server.engine, user, 4, bus=server.bus)
    await until(lambda: _all_done(server.engine, 7), what="all completed")
    assert {s.job_id for s in smart.assignments} >= {j for _, j in inf}
    assert all(not s.use_inference for s in plain.assignments)
    prompt = next(s for s in smart.assignments if s.job_id == inf[0][1])
    assert prompt.input_mode == job_pb2.INPUT_MODE_PROMPT and prompt.prompt == "hello"
    assert prompt.use_inference
    await plain.stop()
    await smart.stop()


async def test_killed_node_job_completes_elsewhere_after_lease(server: ControlPlaneServer) -> None:
    gate = Gate()
    doomed = SimNode(server.target, PSK, "doomed", slots=1, runtime=gate)
    await doomed.start()
    user = await make_user(server.engine)
    [(_, job_id)] = await enqueue_jobs(server.engine, user, 1, bus=server.bus)
    await until(lambda: gate.started == [job_id], what="started on doomed")
    survivor = SimNode(server.target, PSK, "survivor", slots=1)
    await survivor.start()
    await doomed.kill()
    await until(lambda: _all_done(server.engine, 1), what="completed on survivor")
    job = await _job(server.engine, job_id)
    assert job.attempt == 2 and job.node_id == survivor.node_id
    assert [s.attempt for s in survivor.assignments] == [2]
    async with server.engine.connect() as conn:
        rows = list(await conn.execute(sa.select(ATTEMPTS).order_by(ATTEMPTS.c.attempt)))
        node = (await conn.execute(sa.select(NODES).where(NODES.c.id == doomed.node_id))).one()
    assert [(r.attempt, r.status) for r in rows] == [(1, "lost"), (2, "completed")]
    assert node.status == "offline"
    await survivor.stop()


async def test_orchestrator_restart_mid_job_result_lands_once(engine: AsyncEngine) -> None:
    run = await _one_running(engine, 10, "steady")
    srv, node, gate, job_id = run.srv, run.node, run.gate, run.job_id
    settings = srv.settings
    await srv.stop()
    await until(lambda: not node.connected.is_set(), what="stream dropped")
    srv2 = await ControlPlaneServer(engine, settings, port=srv.port).start()
    await until(node.connected.is_set, what="reconnected")
    assert node.hello_acks == 2
    gate.release.set()
    await until(lambda: _all_done(engine, 1), what="completed")
    await until(lambda: (job_id, 1) in node.acked, what="acked")
    async with engine.connect() as conn:
        rows = list(await conn.execute(sa.select(ATTEMPTS)))
    assert [(r.attempt, r.status) for r in rows] == [(1, "completed")]
    assert len(node.assignments) == 1  # never dispatched twice
    await node.stop()
    await srv2.stop()


async def test_restart_longer_than_the_lease_requeues_nothing(engine: AsyncEngine) -> None:
    """Nodes cannot renew leases while the orchestrator is down; a restart that outlasts
    the lease gives them two leases from start-up to reconnect before any is requeued (the
    netns restart test saw jobs run twice when start-up on a busy machine took longer)."""
    run = await _one_running(engine, 2, "patient")
    srv, node, gate = run.srv, run.node, run.gate
    settings = srv.settings
    await srv.stop()
    await asyncio.sleep(3.0)  # down for longer than the lease
    srv2 = await ControlPlaneServer(engine, settings, port=srv.port).start()
    swept = await srv2.cp.scheduler.expire_leases()
    assert swept == 0  # within the start-up grace
    await until(node.connected.is_set, what="reconnected")
    await asyncio.sleep(4.5)  # past the grace: the node's heartbeats now hold the lease
    gate.release.set()
    await until(lambda: _all_done(engine, 1), what="completed")
    async with engine.connect() as conn:
        rows = list(await conn.execute(sa.select(ATTEMPTS)))
    assert [(r.attempt, r.status) for r in rows] == [(1, "completed")]
    assert len(node.assignments) == 1
    await node.stop()
    await srv2.stop()


async def test_lease_running_out_just_after_a_restart_waits_for_its_node(
    engine: AsyncEngine,
) -> None:
    """A lease renewed just before the orchestrator stopped runs out soon after it is
    back, maybe before its node (reconnecting with backoff) is: start-up holds it for two
    leases (the netns restart test ran a job twice when it did not)."""
    run = await _one_running(engine, 2, "slow-to-return")
    srv, node, job_id = run.srv, run.node, run.job_id
    settings = srv.settings
    await until(lambda: _job_status(engine, job_id, "running"), what="running in the store")
    await node.kill()
    await srv.stop()
    async with engine.begin() as conn:
        renewed = utcnow() + timedelta(seconds=0.5)
        await conn.execute(JOBS.update().values(lease_expires_at=renewed))
    srv2 = await ControlPlaneServer(engine, settings, port=srv.port).start()
    await asyncio.sleep(1.0)  # the lease as last renewed has run out
    assert await srv2.cp.scheduler.expire_leases() == 0
    job = await _job(engine, job_id)
    assert (job.status, job.node_id, job.attempt) == ("running", node.node_id, 1)
    # A node that never comes back loses the job two leases after start-up.
    await until(lambda: _job_status(engine, job_id, "queued"), what="requeued")
    await srv2.stop()


async def test_node_back_after_its_lease_lapsed_reclaims_the_requeued_job(
    engine: AsyncEngine,
) -> None:
    """Requeued while its node was away and not yet dispatched again: the node that still
    runs that copy takes it back on reconnect; it runs once and the task is not canceled
    by the stale copy's cancel."""
    run = await _one_running(engine, 2, "returning")
    srv, node, gate, job_id = run.srv, run.node, run.gate, run.job_id
    task_id = run.task_id
    settings = srv.settings
    plane = srv.cp
    await srv.stop()
    async with engine.begin() as conn:
        await conn.execute(JOBS.update().values(lease_expires_at=utcnow()))
    await asyncio.sleep(0.01)  # the lease lapsed after start-up: no grace for it
    assert await plane.scheduler.expire_leases() == 1
    job = await _job(engine, job_id)
    assert (job.status, job.node_id, job.attempt) == ("queued", None, 1)
    srv2 = await ControlPlaneServer(engine, settings, port=srv.port).start()
    await until(node.connected.is_set, what="reconnected")
    await until(lambda: _job_status(engine, job_id, "running"), what="reclaimed by its node")
    async with engine.connect() as conn:
        task = (await conn.execute(sa.select(TASKS).where(TASKS.c.id == task_id))).one()
    assert task.status == "running"
    gate.release.set()
    await until(lambda: _all_done(engine, 1), what="completed")
    async with engine.connect() as conn:
        rows = list(await conn.execute(sa.select(ATTEMPTS)))
    assert [(r.attempt, r.status) for r in rows] == [(1, "completed")]
    assert len(node.assignments) == 1 and node.cancels == []
    await node.stop()
    await srv2.stop()


async def test_stopped_stale_copy_leaves_the_requeued_job_queued(engine: AsyncEngine) -> None:
    # The server's own sweep stays out of it: the expiry below is this test's to count.
    run = await _one_running(engine, 2, "late", sweep_seconds=3600)
    srv, node, job_id = run.srv, run.node, run.job_id
    await node.kill()
    plane = srv.cp
    async with engine.begin() as conn:
        await conn.execute(JOBS.update().values(lease_expires_at=utcnow()))
    await asyncio.sleep(0.01)  # the lease lapsed after start-up: no grace for it
    assert await plane.scheduler.expire_leases() == 1
    stale = job_pb2.JobResult(
        job_id=job_id,
        attempt=1,
        status=job_pb2.JOB_STATUS_CANCELED,
        exit_code=-1,
        reason="lease_expired",
    )
    await srv.cp.ingest.apply([Result(node.node_id, stale, lambda: None)])
    job = await _job(engine, job_id)
    assert (job.status, job.attempt) == ("queued", 1)
    async with engine.connect() as conn:
        rows = list(await conn.execute(sa.select(ATTEMPTS.c.attempt, ATTEMPTS.c.status)))
    assert [tuple(r) for r in rows] == [(1, "canceled")]
    await srv.stop()


async def test_lease_lost_before_a_restart_is_requeued_after_the_grace(
    engine: AsyncEngine,
) -> None:
    run = await _one_running(engine, 1, "gone")
    srv, doomed, job_id = run.srv, run.node, run.job_id
    settings = srv.settings
    await doomed.kill()
    await srv.stop()
    srv2 = await ControlPlaneServer(engine, settings, port=srv.port).start()
    survivor = SimNode(srv2.target, PSK, "heir", slots=1)
    await survivor.start()
    await until(lambda: _all_done(engine, 1), what="completed on the survivor")
    job = await _job(engine, job_id)
    assert (job.attempt, job.node_id) == (2, survivor.node_id)
    await survivor.stop()
    await srv2.stop()


async def test_replayed_result_is_stored_once(server: ControlPlaneServer) -> None:
    node = SimNode(server.target, PSK, "replayer", slots=1)
    await node.start()
    user = await make_user(server.engine)
    [(_, job_id)] = await enqueue_jobs(server.engine, user, 1, bus=server.bus)
    await until(lambda: node.acked == [(job_id, 1)], what="acked")
    first = await _job(server.engine, job_id)
    replay = job_pb2.JobResult(
        job_id=job_id, attempt=1, status=job_pb2.JOB_STATUS_FAILED, exit_code=9, stdout=b"x"
    )
    node._send(dispatch_pb2.ConnectRequest(job_result=replay))
    node._send(dispatch_pb2.ConnectRequest(job_result=replay))
    await until(lambda: len(node.acked) == 3, what="duplicates acknowledged")
    async with server.engine.connect() as conn:
        rows = list(await conn.execute(sa.select(ATTEMPTS)))
    assert [(r.status, r.exit_code) for r in rows] == [("completed", 0)]
    again = await _job(server.engine, job_id)
    assert (again.status, again.exit_code, again.stdout) == ("completed", 0, first.stdout)
    # An unknown job's result is acknowledged too, so the node can forget it.
    ghost = job_pb2.JobResult(job_id="01J00000000000000000000000", attempt=1)
    node._send(dispatch_pb2.ConnectRequest(job_result=ghost))
    await until(lambda: len(node.acked) == 4, what="ghost acknowledged")
    await node.stop()


@pytest.mark.parametrize("started", [True, False], ids=["running", "assigned-not-started"])
async def test_cancel_reaches_the_node(server: ControlPlaneServer, started: bool) -> None:
    """A canceled job its node holds is stopped there, whether the node has said it
    started or not yet (a job claimed but not started used to end at once in the store
    while its node ran it to the end)."""
    gate = Gate()
    node = SimNode(server.target, PSK, "cancelable", slots=1, runtime=gate, send_started=started)
    await node.start()
    user = await make_user(server.engine)
    [(task_id, job_id)] = await enqueue_jobs(server.engine, user, 1, bus=server.bus)
    await until(lambda: gate.started == [job_id], what="running")
    if started:
        await until(lambda: _job_status(server.engine, job_id, "running"), what="started")
    async with server.engine.begin() as conn:  # what TaskService.CancelTask does
        outcome = await lifecycle.cancel_task(conn, task_id, utcnow())
    assert outcome == lifecycle.Canceled(done=True, stop_requested=True)
    server.bus.publish(JOBS_TOPIC)
    await until(lambda: [c.job_id for c in node.cancels] == [job_id], what="cancel sent")
    assert node.cancels[0].attempt == 1 and node.cancels[0].reason == "canceled"
    await until(lambda: (job_id, 1) in node.acked, what="canceled result acked")
    job = await _job(server.engine, job_id)
    assert job.status == "canceled" and not job.cancel_requested and job.ended_at is not None
    async with server.engine.connect() as conn:
        attempt = (await conn.execute(sa.select(ATTEMPTS))).one()
        task = (await conn.execute(sa.select(TASKS).where(TASKS.c.id == task_id))).one()
    assert (attempt.status, attempt.reason) == ("canceled", "canceled")
    assert (task.status, task.reason) == ("canceled", "canceled")
    async with server.engine.begin() as conn:  # a second cancel finds it ended
        again = await lifecycle.cancel_task(conn, task_id, utcnow())
    assert again == lifecycle.Canceled(done=False, stop_requested=False)
    await node.stop()


async def test_attempt_limit_fails_job_node_lost(sqlite_engine: AsyncEngine) -> None:
    srv = await ControlPlaneServer(sqlite_engine, settings_for_tests(max_attempts=1)).start()
    gate = Gate()
    node = SimNode(srv.target, PSK, "lost", slots=1, runtime=gate)
    await node.start()
    user = await make_user(sqlite_engine)
    [(task_id, job_id)] = await enqueue_jobs(sqlite_engine, user, 1, bus=srv.bus)
    await until(lambda: gate.started == [job_id], what="running")
    await node.kill()

    async def failed() -> bool:
        return (await _statuses(sqlite_engine, TASKS))["failed"] == 1

    await until(failed, what="task failed")
    job = await _job(sqlite_engine, job_id)
    assert (job.status, job.reason) == ("failed", "node_lost")
    async with sqlite_engine.connect() as conn:
        task = (await conn.execute(sa.select(TASKS).where(TASKS.c.id == task_id))).one()
    assert task.reason == "node_lost"
    await srv.stop()


async def test_stale_holder_is_told_to_cancel_and_late_result_only_recorded(
    sqlite_engine: AsyncEngine,
) -> None:
    srv = await ControlPlaneServer(sqlite_engine, settings_for_tests(lease_seconds=1)).start()
    gate = Gate()
    slow = SimNode(srv.target, PSK, "slow", slots=1, runtime=gate)
    await slow.start()
    user = await make_user(sqlite_engine)
    [(_, job_id)] = await enqueue_jobs(sqlite_engine, user, 1, bus=srv.bus)
    await until(lambda: gate.started == [job_id], what="running")
    # A hung job: the node stops listing it in heartbeats, so its lease runs out.
    hung = slow.running.pop((job_id, 1))
    await until(lambda: any(c.job_id == job_id for c in slow.cancels), what="lease_expired cancel")
    assert slow.cancels[-1].reason == "lease_expired"
    fast = SimNode(srv.target, PSK, "fast", slots=1)
    await fast.start()
    await until(lambda: _all_done(sqlite_engine, 1), what="done on fast")
    assert [s.attempt for s in fast.assignments] == [2]
    # The old copy reports late: recorded on attempt 1, the job keeps attempt 2's result.
    late = job_pb2.JobResult(
        job_id=job_id, attempt=1, status=job_pb2.JOB_STATUS_FAILED, exit_code=3
    )
    slow._send(dispatch_pb2.ConnectRequest(job_result=late))
    await until(lambda: (job_id, 1) in slow.acked, what="late result acked")
    async with sqlite_engine.connect() as conn:
        rows = list(await conn.execute(sa.select(ATTEMPTS).order_by(ATTEMPTS.c.attempt)))
    assert [(r.attempt, r.status, r.exit_code) for r in rows] == [
        (1, "failed", 3),
        (2, "completed", 0),
    ]
    job = await _job(sqlite_engine, job_id)
    assert (job.status, job.attempt, job.exit_code) == ("completed", 2, 0)
    # Reconnecting while still holding the old copy: told to cancel it.
    slow.running[(job_id, 1)] = hung
    before = len(slow.cancels)
    slow.disconnect()
    await until(lambda: len(slow.cancels) > before, what="superseded cancel")
    assert (slow.cancels[-1].job_id, slow.cancels[-1].reason) == (job_id, "superseded")
    await until(lambda: hung.done(), what="old copy stopped")
    await slow.stop()
    await fast.stop()
    await srv.stop()


async def test_hello_rules(sqlite_server: ControlPlaneServer) -> None:
    node = SimNode(sqlite_server.target, PSK, "rules")
    await node.register()
    channel = grpc.aio.insecure_channel(sqlite_server.target)
    stub = dispatch_pb2_grpc.DispatchServiceStub(channel)  # type: ignore[no-untyped-call]

    async def first(msg: dispatch_pb2.ConnectRequest, metadata: object) -> grpc.StatusCode:
        async def one() -> object:
            yield msg

        call = stub.Connect(one(), metadata=metadata)
        try:
            async for _ in call:
                pass
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    ready = dispatch_pb2.ConnectRequest(ready=dispatch_pb2.Ready(free_slots=1))
    wrong = dispatch_pb2.ConnectRequest(hello=dispatch_pb2.Hello(node_slug="someone-else"))
    assert await first(ready, node.metadata) == grpc.StatusCode.INVALID_ARGUMENT
    assert await first(wrong, node.metadata) == grpc.StatusCode.PERMISSION_DENIED
    assert await first(ready, ()) == grpc.StatusCode.UNAUTHENTICATED
    await channel.close(None)
    await node.stop()
