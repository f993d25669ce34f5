"""Batched dispatch streams (RequestBatch / ResponseBatch) over real gRPC, on SQLite and
Postgres: items handled in order, batches only towards a peer that reads them, and a
node from before batching served as before."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from cynode.controlplane.v1 import dispatch_pb2, dispatch_pb2_grpc
from cynode.jobs.v1 import job_pb2
from cynode.orchestrator.controlplane.batching import coalesce
from cynode.orchestrator.controlplane.ingest import Result, Started
from cynode.orchestrator.simnode import SimNode
from cynode.orchestrator.simnode.harness import ControlPlaneServer, enqueue_jobs, make_user
from cynode.orchestrator.store.models import utcnow
from cynode.orchestrator.store.tables import ATTEMPTS, CHUNKS, JOBS, TASKS
from cynode.testing import until

PSK = "test-psk-0123456789"
Request = dispatch_pb2.ConnectRequest
Response = dispatch_pb2.ConnectResponse


class RawStream:
    """A dispatch stream driven message by message, as a node of any vintage would."""

    def __init__(self, srv: ControlPlaneServer, node: SimNode) -> None:
        self._channel = grpc.aio.insecure_channel(srv.target)
        stub = dispatch_pb2_grpc.DispatchServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._out: asyncio.Queue[Request | None] = asyncio.Queue()

        async def requests() -> AsyncIterator[Request]:
            while (msg := await self._out.get()) is not None:
                yield msg

        self.call = stub.Connect(requests(), metadata=node.metadata)

    def send(self, *msgs: Request) -> None:
        for msg in msgs:
            self._out.put_nowait(msg)

    def send_batch(self, *items: Request) -> None:
        self.send(Request(batch=dispatch_pb2.RequestBatch(items=items)))

    async def read(self) -> Response:
        msg = await asyncio.wait_for(self.call.read(), 10)
        assert isinstance(msg, Response), msg
        return msg

    async def read_items(self, n: int) -> tuple[list[Response], int]:
        """The next `n` messages, batches unpacked; also how many writes carried them."""
        items: list[Response] = []
        writes = 0
        while len(items) < n:
            msg = await self.read()
            writes += 1
            items += list(msg.batch.items) if msg.HasField("batch") else [msg]
        assert len(items) == n, [m.WhichOneof("msg") for m in items]
        return items, writes

    async def close(self) -> None:
        self._out.put_nowait(None)
        self.call.cancel()
        await self._channel.close(None)


async def _raw(
    srv: ControlPlaneServer, slug: str, *, batches: bool, slots: int = 4
) -> tuple[RawStream, SimNode]:
    node = SimNode(srv.target, PSK, slug, slots=slots)
    await node.register()
    await node.fetch_config()  # else the stream opens with a ConfigChanged
    stream = RawStream(srv, node)
    hello = dispatch_pb2.Hello(
        node_slug=slug, config_version=node.config_version, accepts_batches=batches
    )
    stream.send(Request(hello=hello))
    ack = await stream.read()
    assert ack.WhichOneof("msg") == "hello_ack" and ack.hello_ack.accepts_batches
    return stream, node


def _ready(n: int) -> Request:
    return Request(ready=dispatch_pb2.Ready(free_slots=n))


def _done(spec: job_pb2.JobSpec) -> list[Request]:
    """What a node sends for a job it ran: started, its output, its result."""
    started = dispatch_pb2.JobStarted(job_id=spec.job_id, attempt=spec.attempt)
    started.started_at.GetCurrentTime()
    chunk = dispatch_pb2.OutputChunk(
        job_id=spec.job_id, attempt=spec.attempt, stream="stdout", data=b"out", offset=0
    )
    result = job_pb2.JobResult(
        job_id=spec.job_id, attempt=spec.attempt, status=job_pb2.JOB_STATUS_COMPLETED, stdout=b"o"
    )
    result.started_at.CopyFrom(started.started_at)
    result.ended_at.GetCurrentTime()
    return [Request(job_started=started), Request(output_chunk=chunk), Request(job_result=result)]


async def _all_completed(engine: AsyncEngine, n: int) -> bool:
    async with engine.connect() as conn:
        rows = list(await conn.execute(sa.select(JOBS.c.status)))
    return len(rows) == n and all(r.status == "completed" for r in rows)


async def test_batched_node_gets_batches_and_items_apply_in_order(
    server: ControlPlaneServer,
) -> None:
    user = await make_user(server.engine)
    pairs = await enqueue_jobs(server.engine, user, 4, bus=server.bus)
    stream, _ = await _raw(server, "batcher", batches=True)
    stream.send(_ready(3))
    assigned, writes = await stream.read_items(3)
    assert {m.WhichOneof("msg") for m in assigned} == {"assignment"}
    assert writes == 1  # claimed in one round, sent in one write
    specs = [m.assignment.spec for m in assigned]
    # One batch: every job's started, output and result, then the credits they free.
    # The Ready must count after the results (it would be capped while they are still
    # outstanding), so the fourth job can only be assigned if the order held.
    stream.send_batch(*(item for spec in specs for item in _done(spec)), _ready(3))
    got, writes = await stream.read_items(4)
    acks = [m.result_ack for m in got if m.HasField("result_ack")]
    assert sorted((a.job_id, a.attempt) for a in acks) == sorted((s.job_id, 1) for s in specs)
    assert writes <= 2  # the acks of one commit share a write
    [fourth] = [m.assignment.spec for m in got if m.HasField("assignment")]
    assert fourth.job_id == ({j for _, j in pairs} - {s.job_id for s in specs}).pop()
    # A single message after batches: the same stream takes both forms.
    stream.send(*_done(fourth))
    [ack], _ = await stream.read_items(1)
    assert ack.result_ack.job_id == fourth.job_id
    await until(lambda: _all_completed(server.engine, 4), what="completed")
    async with server.engine.connect() as conn:
        attempts = list(await conn.execute(sa.select(ATTEMPTS.c.status, ATTEMPTS.c.started_at)))
        chunks = list(await conn.execute(sa.select(CHUNKS.c.data)))
    assert [a.status for a in attempts] == ["completed"] * 4
    assert all(a.started_at is not None for a in attempts)
    assert [c.data for c in chunks] == [b"out"] * 4
    await stream.close()


async def test_node_without_batches_gets_single_messages(server: ControlPlaneServer) -> None:
    user = await make_user(server.engine)
    await enqueue_jobs(server.engine, user, 3, bus=server.bus)
    stream, _ = await _raw(server, "vintage", batches=False)
    stream.send(_ready(3))
    assigned, writes = await stream.read_items(3)
    assert writes == 3
    for spec in [m.assignment.spec for m in assigned]:
        stream.send(*_done(spec))
    acks, writes = await stream.read_items(3)
    assert writes == 3 and all(m.HasField("result_ack") for m in acks)
    await stream.close()


async def test_nested_batch_and_hello_mid_stream_are_ignored(
    sqlite_server: ControlPlaneServer,
) -> None:
    user = await make_user(sqlite_server.engine)
    await enqueue_jobs(sqlite_server.engine, user, 2, bus=sqlite_server.bus)
    stream, node = await _raw(sqlite_server, "odd", batches=True, slots=2)
    inner = dispatch_pb2.RequestBatch(items=[_ready(1)])
    stream.send_batch(Request(batch=inner), Request(hello=dispatch_pb2.Hello()))
    stream.send_batch(_ready(1))  # a batch of one is still a batch
    [assigned], _ = await stream.read_items(1)
    assert assigned.HasField("assignment")
    await asyncio.sleep(0.5)  # room for a second assignment, had the nested Ready counted
    session = sqlite_server.cp.registry.get(node.node_id)
    assert session is not None and session.credits == 0 and len(session.outstanding) == 1
    async with sqlite_server.engine.connect() as conn:
        statuses = sorted(r.status for r in await conn.execute(sa.select(JOBS.c.status)))
    assert statuses == ["queued", "queued"]  # one assigned (not started yet), one waiting
    async with sqlite_server.engine.connect() as conn:
        owners = [r.node_id for r in await conn.execute(sa.select(JOBS.c.node_id))]
    assert sorted(owners, key=str) == sorted([node.node_id, None], key=str)
    await stream.close()


async def test_old_style_simnodes_and_batching_ones_share_the_work(
    server: ControlPlaneServer,
) -> None:
    old = SimNode(server.target, PSK, "old", slots=4, batching=False)
    new = SimNode(server.target, PSK, "new", slots=4)
    await old.start()
    await new.start()
    sessions = {s.slug: s for s in server.cp.registry}
    assert (sessions["old"].batches, sessions["new"].batches) == (False, True)
    user = await make_user(server.engine)
    await enqueue_jobs(server.engine, user, 40, bus=server.bus)

    await until(lambda: _all_completed(server.engine, 40), what="all completed")
    await until(lambda: len(old.acked) + len(new.acked) == 40, what="all acknowledged")
    assert old.assignments and new.assignments
    assert (old.batches_in, old.batches_out) == (0, 0)
    assert new.batches_in > 0 and new.batches_out > 0
    assert not old.spool and not new.spool
    await old.stop()
    await new.stop()


def test_coalesce_keeps_order_and_the_size_limit() -> None:
    def ready(n: int) -> Request:
        return _ready(n)

    def wrap(items: list[Request]) -> Request:
        return Request(batch=dispatch_pb2.RequestBatch(items=items))

    big = Request(job_result=job_pb2.JobResult(stdout=b"x" * 100))
    one = ready(1)
    assert list(coalesce([one], wrap)) == [one]
    assert list(coalesce([], wrap)) == []
    writes = list(coalesce([ready(1), ready(2), big, ready(3), ready(4)], wrap, limit=50))
    assert [w.WhichOneof("msg") for w in writes] == ["batch", "job_result", "batch"]
    assert [i.ready.free_slots for i in writes[0].batch.items] == [1, 2]
    assert [i.ready.free_slots for i in writes[2].batch.items] == [3, 4]
    tail = list(coalesce([big, ready(5)], wrap, limit=50))
    assert [w.WhichOneof("msg") for w in tail] == ["job_result", "ready"]


async def _rows_of(engine: AsyncEngine, job_id: str) -> tuple[Any, Any, Any]:
    async with engine.connect() as conn:
        job = (await conn.execute(sa.select(JOBS).where(JOBS.c.id == job_id))).one()
        task = (await conn.execute(sa.select(TASKS).where(TASKS.c.id == job.task_id))).one()
        attempt = (await conn.execute(sa.select(ATTEMPTS).where(ATTEMPTS.c.job_id == job_id))).one()
    return job, task, attempt


async def test_started_and_finished_in_one_write_ends_as_in_two(
    server: ControlPlaneServer,
) -> None:
    """A job whose start and result land in one ingest batch skips its running step (the
    start's UPDATEs); what is stored must equal what two batches store."""
    user = await make_user(server.engine)
    await enqueue_jobs(server.engine, user, 2, bus=server.bus)
    stream, node = await _raw(server, "folder", batches=True)
    stream.send(_ready(2))
    assigned, _ = await stream.read_items(2)
    one, two = (m.assignment.spec.job_id for m in assigned)
    hour_ago = utcnow() - timedelta(hours=1)
    ingest = server.cp.ingest

    def result(job_id: str) -> Result:
        res = job_pb2.JobResult(job_id=job_id, attempt=1, status=job_pb2.JOB_STATUS_COMPLETED)
        res.started_at.FromDatetime(hour_ago)  # the node's clock: not the start's time
        res.ended_at.FromDatetime(utcnow())
        return Result(node.node_id, res, lambda: None)

    def started(job_id: str) -> Started:
        return Started(node.node_id, job_id, 1, utcnow())

    first = started(one)
    await ingest.apply([first])
    await ingest.apply([result(one)])
    second = started(two)
    await ingest.apply([second, started(two), result(two)])
    for job_id, start in ((one, first), (two, second)):
        job, task, attempt = await _rows_of(server.engine, job_id)
        assert (job.status, task.status, attempt.status) == ("completed",) * 3
        assert job.started_at == start.at  # the start's time, as a separate start sets it
        assert attempt.started_at == hour_ago  # the result's, which overwrites the start's
        assert job.ended_at is not None and job.ended_at == attempt.ended_at
    await stream.close()


@pytest.mark.parametrize("folded", [False, True], ids=["two-batches", "one-batch"])
async def test_a_result_without_a_start_time_keeps_the_recorded_one(
    server: ControlPlaneServer, folded: bool
) -> None:
    user = await make_user(server.engine)
    await enqueue_jobs(server.engine, user, 1, bus=server.bus)
    stream, node = await _raw(server, f"no-start-time-{folded}", batches=True)
    stream.send(_ready(1))
    [assigned], _ = await stream.read_items(1)
    job_id = assigned.assignment.spec.job_id
    start = Started(node.node_id, job_id, 1, utcnow() - timedelta(minutes=5))
    res = job_pb2.JobResult(job_id=job_id, attempt=1, status=job_pb2.JOB_STATUS_FAILED)
    res.ended_at.FromDatetime(utcnow())
    result = Result(node.node_id, res, lambda: None)
    if folded:
        await server.cp.ingest.apply([start, result])
    else:
        await server.cp.ingest.apply([start])
        await server.cp.ingest.apply([result])
    job, _, attempt = await _rows_of(server.engine, job_id)
    assert (job.status, attempt.status) == ("failed", "failed")
    assert attempt.started_at == start.at == job.started_at
    await stream.close()
