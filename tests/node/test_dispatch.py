"""The dispatch client against a real gRPC server: stream protocol, spool, reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from cynode.controlplane.v1 import dispatch_pb2
from cynode.jobs.v1 import job_pb2
from cynode.node import dispatch
from cynode.node.backoff import Backoff
from cynode.node.capability import build_report
from cynode.node.config import NodeConfig
from cynode.node.cpclient import ControlPlaneClient
from cynode.node.dispatch import DispatchClient, coalesce
from cynode.node.job_worker import OnOutput, OnStarted
from cynode.node.readiness import StepState
from cynode.node.spool import ResultSpool
from cynode.node.state import StateDir
from tests.node.cp_server import FakeControlPlane, start_server
from tests.node.fakes import ScriptedRunner


class Harness:
    def __init__(self, client: DispatchClient, runners: list[ScriptedRunner]) -> None:
        self.client = client
        self.runners = runners


def spec(job_id: str = "JOB1", attempt: int = 1) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        job_id=job_id,
        task_id="TASK1",
        attempt=attempt,
        input_mode=job_pb2.INPUT_MODE_COMMANDS,
        commands=["echo hello"],
    )


def assign(job_id: str = "JOB1", attempt: int = 1) -> dict[str, Any]:
    return {"assignment": dispatch_pb2.JobAssignment(spec=spec(job_id, attempt))}


@contextlib.asynccontextmanager
async def running_client(
    node_config: NodeConfig,
    channel: grpc.aio.Channel,
    *,
    hold: bool = False,
    fail: Exception | None = None,
    max_concurrency: int = 2,
    on_config_changed: Callable[[str], Any] | None = None,
    hold_removal: bool = False,
) -> AsyncIterator[Harness]:
    state = StateDir(node_config.state_dir)
    state.prepare()
    cp = ControlPlaneClient(
        node_config, channel, state, lambda: build_report(node_config, podman_version="4.3.1")
    )
    runners: list[ScriptedRunner] = []

    def factory(on_output: OnOutput, on_started: OnStarted) -> ScriptedRunner:
        runner = ScriptedRunner(
            on_output, on_started, hold=hold, fail=fail, hold_removal=hold_removal
        )
        runners.append(runner)
        return runner

    client = DispatchClient(
        node_slug=node_config.node_slug,
        channel=channel,
        auth=cp,
        spool=ResultSpool(state.spool_dir),
        runner_factory=factory,
        max_concurrency=max_concurrency,
        backoff=Backoff(0.01, 0.05),
        config_version=lambda: "01JCONFIG",
        on_config_changed=on_config_changed,
    )
    task = asyncio.create_task(client.run())
    try:
        yield Harness(client, runners)
    finally:
        await client.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def results(session: Any) -> list[job_pb2.JobResult]:
    return list(session.of_kind("job_result"))


async def test_job_runs_streams_output_and_result_is_spooled_until_acked(
    control_plane: tuple[FakeControlPlane, str], node_config: NodeConfig, channel: grpc.aio.Channel
) -> None:
    plane, _ = control_plane
    async with running_client(node_config, channel) as h:
        session = await plane.session(0)
        assert session.hello is not None
        assert session.hello.node_slug == "node-test"
        assert session.hello.config_version == "01JCONFIG"
        assert list(session.hello.held_jobs) == []
        await session.wait_for(lambda: bool(session.of_kind("ready")))
        assert session.of_kind("ready")[0].free_slots == 2
        assert h.client.readiness.steps["dispatch"].state is StepState.PASSED

        session.send(**assign())
        await session.wait_for(lambda: bool(results(session)))
        started = session.of_kind("job_started")[0]
        assert (started.job_id, started.attempt) == ("JOB1", 1)
        chunk = session.of_kind("output_chunk")[0]
        assert (chunk.stream, chunk.data, chunk.offset) == ("stdout", b"hello\n", 0)
        result = results(session)[0]
        assert result.status == job_pb2.JOB_STATUS_COMPLETED
        assert result.node_id == "NODE01"
        # The result is written to the spool as it is sent, and stays until acknowledged.
        await session.wait_for(lambda: h.client.spool.has("JOB1", 1))
        await session.wait_for(lambda: len(session.of_kind("ready")) >= 2)
        # Credits add up on the server: a finished job grants one more.
        assert session.of_kind("ready")[-1].free_slots == 1

        session.send(result_ack=dispatch_pb2.ResultAck(job_id="JOB1", attempt=1))
        for _ in range(200):
            if not h.client.spool.has("JOB1", 1):
                break
            await asyncio.sleep(0.01)
        assert not h.client.spool.has("JOB1", 1)
        metrics = h.client.metrics.render().decode()
        assert 'cynode_node_jobs_total{reason="",status="completed"} 1.0' in metrics


async def test_result_finished_while_disconnected_is_resent_after_reconnect(
    control_plane: tuple[FakeControlPlane, str], node_config: NodeConfig, channel: grpc.aio.Channel
) -> None:
    plane, _ = control_plane
    async with running_client(node_config, channel, hold=True) as h:
        first = await plane.session(0)
        first.send(**assign("JOBR", 2))
        await first.wait_for(lambda: bool(first.of_kind("job_started")))
        first.drop()
        await first.ended.wait()
        second = await plane.session(1)
        assert second.hello is not None
        held = {(j.job_id, j.attempt, j.has_result) for j in second.hello.held_jobs}
        assert held == {("JOBR", 2, False)}
        plane.refuse_streams = True
        second.drop()
        await second.ended.wait()
        # Finish the job between streams: the result can only go to the spool.
        h.runners[0].release.set()
        for _ in range(500):
            if h.client.spool.has("JOBR", 2) and not h.client.workers:
                break
            await asyncio.sleep(0.01)
        assert h.client.spool.has("JOBR", 2)
        plane.refuse_streams = False
        third = await plane.session(2)
        assert third.hello is not None
        assert [(j.job_id, j.has_result) for j in third.hello.held_jobs] == [("JOBR", True)]
        await third.wait_for(lambda: bool(results(third)))
        assert results(third)[0].job_id == "JOBR"
        assert results(third)[0].attempt == 2
        third.send(result_ack=dispatch_pb2.ResultAck(job_id="JOBR", attempt=2))
        await third.wait_for(lambda: not h.client.spool.has("JOBR", 2))


def gate_spool_writes(client: DispatchClient, monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Holds every spool write until the returned event is set (the write runs in a
    thread, so it blocks only that thread)."""
    gate = threading.Event()
    put = client.spool.put

    def held_put(result: job_pb2.JobResult) -> Path:
        assert gate.wait(10)
        return put(result)

    monkeypatch.setattr(client.spool, "put", held_put)
    return gate


async def test_the_result_goes_up_before_its_spool_write_ends_and_an_early_ack_deletes_it(
    control_plane: tuple[FakeControlPlane, str],
    node_config: NodeConfig,
    channel: grpc.aio.Channel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plane, _ = control_plane
    async with running_client(node_config, channel) as h:
        gate = gate_spool_writes(h.client, monkeypatch)
        session = await plane.session(0)
        session.send(**assign("JOBE"))
        # Sent while the write is held: the fsyncs no longer come first.
        await session.wait_for(lambda: bool(results(session)))
        assert not h.client.spool.has("JOBE", 1)
        # Until the write is done the job holds its slot as a running one.
        assert ("JOBE", 1) in h.client.workers
        # An assignment of it again meanwhile gets the result again, not a second run.
        session.send(**assign("JOBE"))
        await session.wait_for(lambda: len(results(session)) == 2)
        assert len(h.runners) == 1
        # The artifact uploader's wake-ups, and whether the result file was there then.
        wakes: list[bool] = []
        monkeypatch.setattr(
            h.client, "_on_results_acked", lambda: wakes.append(h.client.spool.has("JOBE", 1))
        )
        session.send(result_ack=dispatch_pb2.ResultAck(job_id="JOBE", attempt=1))
        await asyncio.sleep(0.1)
        woken_before_the_write = len(wakes)
        gate.set()
        await session.wait_for(lambda: ("JOBE", 1) not in h.client.workers)
        # The ack came before the file: the file written after it is removed at once,
        # and the uploader is woken again after that (it skips jobs with a result file).
        assert not h.client.spool.has("JOBE", 1)
        assert len(wakes) > woken_before_the_write and wakes[-1] is False
        assert len(results(session)) == 2


async def test_a_stream_opened_during_the_spool_write_gets_the_result(
    control_plane: tuple[FakeControlPlane, str],
    node_config: NodeConfig,
    channel: grpc.aio.Channel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plane, _ = control_plane
    async with running_client(node_config, channel, hold=True) as h:
        gate = gate_spool_writes(h.client, monkeypatch)
        first = await plane.session(0)
        first.send(**assign("JOBW"))
        await first.wait_for(lambda: bool(first.of_kind("job_started")))
        plane.refuse_streams = True
        first.drop()
        await first.ended.wait()
        # The job ends with no stream: the send goes nowhere, the write is held.
        h.runners[0].release.set()
        await asyncio.sleep(0.1)
        plane.refuse_streams = False
        second = await plane.session(1)
        assert second.hello is not None
        # The Hello saw no file yet: the job is still a running one.
        assert [(j.job_id, j.has_result) for j in second.hello.held_jobs] == [("JOBW", False)]
        await second.wait_for(lambda: bool(second.of_kind("ready")))
        assert results(second) == []
        gate.set()
        # Once written, the result goes up on the stream that opened meanwhile.
        await second.wait_for(lambda: bool(results(second)))
        assert results(second)[0].job_id == "JOBW"
        assert h.client.spool.has("JOBW", 1)


async def test_spooled_result_survives_a_restart_of_the_node(
    control_plane: tuple[FakeControlPlane, str], node_config: NodeConfig, channel: grpc.aio.Channel
) -> None:
    plane, _ = control_plane
    async with running_client(node_config, channel) as h:
        session = await plane.session(0)
        session.send(**assign("JOBS"))
        await session.wait_for(lambda: bool(results(session)))
        await session.wait_for(lambda: h.client.spool.has("JOBS", 1))
    # A new client over the same state dir is the restarted node.
    async with running_client(node_config, channel):
        session = await plane.session(1)
        assert session.hello is not None
        assert [(j.job_id, j.has_result) for j in session.hello.held_jobs] == [("JOBS", True)]
        await session.wait_for(lambda: bool(results(session)))
        assert results(session)[0].job_id == "JOBS"


async def test_cancel_goes_to_the_job_task_and_the_runner(
    control_plane: tuple[FakeControlPlane, str], node_config: NodeConfig, channel: grpc.aio.Channel
) -> None:
    plane, _ = control_plane
    async with running_client(node_config, channel, hold=True) as h:
        session = await plane.session(0)
        session.send(**assign("JOBC"))
        await session.wait_for(lambda: bool(session.of_kind("job_started")))
        session.send(cancel=dispatch_pb2.CancelJob(job_id="OTHER", attempt=1, reason="x"))
        session.send(cancel=dispatch_pb2.CancelJob(job_id="JOBC", attempt=1, reason="user"))
        await session.wait_for(lambda: bool(results(session)))
        assert h.runners[0].cancels == ["user"]
        assert results(session)[0].status == job_pb2.JOB_STATUS_CANCELED


async def test_credits_and_heartbeats_track_running_jobs(
    control_plane: tuple[FakeControlPlane, str], node_config: NodeConfig, channel: grpc.aio.Channel
) -> None:
    plane, _ = control_plane
    async with running_client(node_config, channel, hold=True, max_concurrency=2) as h:
        session = await plane.session(0)
        session.send(**assign("A"))
        session.send(**assign("B"))
        session.send(**assign("A"))  # a duplicate assignment must not start a second copy

        def both_in_heartbeat() -> bool:
            beats = session.of_kind("heartbeat")
            return bool(beats) and {j.job_id for j in beats[-1].running} == {"A", "B"}

        await session.wait_for(both_in_heartbeat, within=5)
        assert len(h.runners) == 2
        assert h.client.free_slots == 0
        h.runners[0].release.set()
        await session.wait_for(lambda: len(results(session)) == 1)
        await session.wait_for(lambda: len(session.of_kind("ready")) == 2)
        assert h.client.free_slots == 1
        h.runners[1].release.set()
        await session.wait_for(lambda: len(session.of_kind("ready")) == 3)
        assert [r.free_slots for r in session.of_kind("ready")] == [2, 1, 1]
        assert h.client.free_slots == 2


async def test_a_finished_job_keeps_its_slot_until_what_it_made_is_removed(
    control_plane: tuple[FakeControlPlane, str], node_config: NodeConfig, channel: grpc.aio.Channel
) -> None:
    plane, _ = control_plane
    async with running_client(node_config, channel, max_concurrency=1, hold_removal=True) as h:
        session = await plane.session(0)
        session.send(**assign("JOBR"))
        await session.wait_for(lambda: bool(results(session)))
        # The result went out at once; the removal still holds the one slot.
        await asyncio.sleep(0.05)
        assert [r.free_slots for r in session.of_kind("ready")] == [1]
        assert h.client.free_slots == 0 and list(h.client.releasing) == [("JOBR", 1)]
        assert h.client.workers == {}  # no longer running: heartbeats do not name it
        assert [(j.job_id, j.has_result) for j in h.client.held_jobs()] == [("JOBR", True)]
        # Stopping the node waits for the removal rather than cutting it short.
        stopping = asyncio.create_task(h.client.stop())
        await asyncio.sleep(0.05)
        assert not stopping.done()
        h.runners[0].removed.set()
        await asyncio.wait_for(stopping, 5)
        assert h.client.releasing == {}


async def test_the_removal_waits_for_the_results_ack_within_a_bound(
    control_plane: tuple[FakeControlPlane, str],
    node_config: NodeConfig,
    channel: grpc.aio.Channel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Podman's removal (and a warm sandbox's refill) would compete with the result's
    # delivery: it begins once the orchestrator acknowledged the result.
    plane, _ = control_plane
    monkeypatch.setattr(dispatch, "RESULT_ACK_WAIT_S", 30.0)
    async with running_client(node_config, channel) as h:
        session = await plane.session(0)
        session.send(**assign("JOBA"))
        await session.wait_for(lambda: bool(results(session)))
        await asyncio.sleep(0.1)
        assert not h.runners[0].release_asked.is_set()
        session.send(result_ack=dispatch_pb2.ResultAck(job_id="JOBA", attempt=1))
        await asyncio.wait_for(h.runners[0].release_asked.wait(), 5)
        # Without an ack (a stream down, say) it waits no longer than the bound.
        monkeypatch.setattr(dispatch, "RESULT_ACK_WAIT_S", 0.1)
        session.send(**assign("JOBB"))
        await session.wait_for(lambda: len(results(session)) == 2)
        await asyncio.wait_for(h.runners[1].release_asked.wait(), 5)


async def test_the_slot_comes_back_once_the_removal_is_done(
    control_plane: tuple[FakeControlPlane, str], node_config: NodeConfig, channel: grpc.aio.Channel
) -> None:
    plane, _ = control_plane
    async with running_client(node_config, channel, max_concurrency=1, hold_removal=True) as h:
        session = await plane.session(0)
        session.send(**assign("JOBR"))
        await session.wait_for(lambda: bool(results(session)))
        assert h.client.free_slots == 0
        h.runners[0].removed.set()
        await session.wait_for(lambda: len(session.of_kind("ready")) == 2)
        assert [r.free_slots for r in session.of_kind("ready")] == [1, 1]
        assert h.client.free_slots == 1 and h.client.releasing == {}


async def test_assignment_of_a_spooled_job_resends_its_result(
    control_plane: tuple[FakeControlPlane, str], node_config: NodeConfig, channel: grpc.aio.Channel
) -> None:
    plane, _ = control_plane
    async with running_client(node_config, channel) as h:
        session = await plane.session(0)
        session.send(**assign("JOBD"))
        await session.wait_for(lambda: bool(results(session)))
        session.send(**assign("JOBD"))
        await session.wait_for(lambda: len(results(session)) == 2)
        assert len(h.runners) == 1


async def test_runner_crash_becomes_a_failed_result(
    control_plane: tuple[FakeControlPlane, str], node_config: NodeConfig, channel: grpc.aio.Channel
) -> None:
    plane, _ = control_plane
    async with running_client(node_config, channel, fail=RuntimeError("podman went away")):
        session = await plane.session(0)
        session.send(**assign("JOBF"))
        await session.wait_for(lambda: bool(results(session)))
        result = results(session)[0]
        assert result.status == job_pb2.JOB_STATUS_FAILED
        assert result.reason == "error"
        assert b"podman went away" in result.stderr


async def test_unauthenticated_stream_registers_again(
    control_plane: tuple[FakeControlPlane, str], node_config: NodeConfig, channel: grpc.aio.Channel
) -> None:
    plane, _ = control_plane
    async with running_client(node_config, channel) as h:
        first = await plane.session(0)
        assert len(plane.registrations) == 1
        plane.valid_tokens.clear()  # the orchestrator forgot every JWT
        first.drop()
        second = await plane.session(1)
        assert len(plane.registrations) == 2
        assert second.hello is not None
        assert "connect" in plane.events
        await second.wait_for(lambda: bool(second.of_kind("ready")))
        assert h.client.connections == 2


async def test_config_changed_calls_the_handler(
    control_plane: tuple[FakeControlPlane, str], node_config: NodeConfig, channel: grpc.aio.Channel
) -> None:
    plane, _ = control_plane
    seen: asyncio.Queue[str] = asyncio.Queue()

    async def handler(version: str) -> None:
        await seen.put(version)
        raise RuntimeError("a failing handler must not end the stream")

    async with running_client(node_config, channel, on_config_changed=handler) as h:
        session = await plane.session(0)
        session.send(config_changed=dispatch_pb2.ConfigChanged(config_version="01JNEW"))
        assert await asyncio.wait_for(seen.get(), 5) == "01JNEW"
        session.send(**assign("JOBX"))
        await session.wait_for(lambda: bool(results(session)))
        assert h.client.connections == 1


async def test_stop_cancels_running_jobs_without_reporting_them(
    control_plane: tuple[FakeControlPlane, str], node_config: NodeConfig, channel: grpc.aio.Channel
) -> None:
    plane, _ = control_plane
    async with running_client(node_config, channel, hold=True) as h:
        session = await plane.session(0)
        session.send(**assign("JOBK"))
        await session.wait_for(lambda: bool(session.of_kind("job_started")))
        await h.client.stop()
        assert h.runners[0].cancelled_by_task
        assert not h.client.spool.has("JOBK", 1)
        assert results(session) == []


async def test_server_down_marks_dispatch_failed_then_recovers(
    node_config: NodeConfig, tmp_path: Path
) -> None:
    from tests.node.cp_server import FakeControlPlane, start_server

    plane = FakeControlPlane()
    server, target = await start_server(plane)
    async with grpc.aio.insecure_channel(target) as chan, running_client(node_config, chan) as h:
        await plane.session(0)
        await server.stop(grace=None)
        for _ in range(500):
            if h.client.readiness.steps["dispatch"].state is StepState.FAILED:
                break
            await asyncio.sleep(0.01)
        assert h.client.readiness.steps["dispatch"].state is StepState.FAILED
        assert "stream failed" in h.client.readiness.steps["dispatch"].detail
        assert not h.client.connected.is_set()


def batch_item(**kwargs: Any) -> dispatch_pb2.ConnectResponse:
    return dispatch_pb2.ConnectResponse(**kwargs)


async def test_batches_from_the_orchestrator_are_handled_in_order(
    control_plane: tuple[FakeControlPlane, str], node_config: NodeConfig, channel: grpc.aio.Channel
) -> None:
    plane, _ = control_plane
    async with running_client(node_config, channel, hold=True) as h:
        session = await plane.session(0)
        assert session.hello is not None and session.hello.accepts_batches
        # An assignment and its cancel in one write: the cancel finds the job it follows.
        session.send_batch(
            batch_item(**assign("JOBB")),
            batch_item(cancel=dispatch_pb2.CancelJob(job_id="JOBB", attempt=1, reason="user")),
        )
        await session.wait_for(lambda: bool(results(session)))
        assert h.runners[0].cancels == ["user"]
        assert results(session)[0].status == job_pb2.JOB_STATUS_CANCELED
        # Single messages and batches mixed on one stream; a nested batch is ignored.
        nested = dispatch_pb2.ResponseBatch(items=[batch_item(**assign("NESTED"))])
        session.send_batch(
            batch_item(result_ack=dispatch_pb2.ResultAck(job_id="JOBB", attempt=1)),
            batch_item(batch=nested),
        )
        session.send(**assign("JOBS2"))
        await session.wait_for(lambda: len(h.runners) == 2)
        await session.wait_for(lambda: set(h.client.workers) == {("JOBS2", 1)})
        assert not h.client.spool.has("JOBB", 1)


async def test_queued_messages_go_up_as_one_batch_in_order(
    control_plane: tuple[FakeControlPlane, str], node_config: NodeConfig, channel: grpc.aio.Channel
) -> None:
    plane, _ = control_plane
    async with running_client(node_config, channel) as h:
        session = await plane.session(0)
        await session.wait_for(lambda: bool(session.of_kind("ready")))
        assert h.client.peer_batches
        before = session.batches
        # Queued in one step, so the writer finds them all waiting.
        for slots in (7, 8, 9):
            h.client.send(dispatch_pb2.ConnectRequest(ready=dispatch_pb2.Ready(free_slots=slots)))
        await session.wait_for(lambda: len(session.of_kind("ready")) == 4)
        assert [r.free_slots for r in session.of_kind("ready")] == [2, 7, 8, 9]
        assert session.batches == before + 1


async def test_an_orchestrator_without_batches_gets_single_messages(
    node_config: NodeConfig,
) -> None:
    plane = FakeControlPlane(accepts_batches=False)
    server, target = await start_server(plane)
    async with grpc.aio.insecure_channel(target) as chan, running_client(node_config, chan) as h:
        session = await plane.session(0)
        await session.wait_for(lambda: bool(session.of_kind("ready")))
        assert not h.client.peer_batches
        for slots in (7, 8, 9):
            h.client.send(dispatch_pb2.ConnectRequest(ready=dispatch_pb2.Ready(free_slots=slots)))
        session.send(**assign("JOBO"))
        await session.wait_for(lambda: bool(results(session)))
        assert [r.free_slots for r in session.of_kind("ready")][:4] == [2, 7, 8, 9]
        assert session.batches == 0
    await server.stop(grace=None)


def test_coalesce_keeps_order_and_the_size_limit() -> None:
    def ready(n: int) -> dispatch_pb2.ConnectRequest:
        return dispatch_pb2.ConnectRequest(ready=dispatch_pb2.Ready(free_slots=n))

    big = dispatch_pb2.ConnectRequest(job_result=job_pb2.JobResult(stdout=b"x" * 100))
    assert coalesce([]) == []
    one = ready(1)
    assert coalesce([one]) == [one]
    writes = coalesce([ready(1), ready(2), big, ready(3)], limit=50)
    kinds = [w.WhichOneof("msg") for w in writes]
    assert kinds == ["batch", "job_result", "ready"]
    assert [i.ready.free_slots for i in writes[0].batch.items] == [1, 2]
    assert writes[2].ready.free_slots == 3
    flat = coalesce([ready(n) for n in range(5)])
    assert len(flat) == 1 and [i.ready.free_slots for i in flat[0].batch.items] == list(range(5))
