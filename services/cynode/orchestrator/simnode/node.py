"""SimNode: registers with the PSK, fetches and acknowledges its config, holds the
dispatch stream open (see `cynode.orchestrator.controlplane.dispatch` for the protocol),
grants credits, heartbeats, runs assignments with a scripted runtime, keeps results in an
in-memory spool until ResultAck, and reconnects with backoff, resending what it holds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import grpc

from cynode.controlplane.v1 import dispatch_pb2, dispatch_pb2_grpc, nodes_pb2, nodes_pb2_grpc
from cynode.jobs.v1 import job_pb2
from cynode.orchestrator.controlplane.batching import coalesce
from cynode.orchestrator.lifecycle import Reason

log = logging.getLogger(__name__)

Runtime = Callable[[job_pb2.JobSpec], Awaitable[job_pb2.JobResult]]
Key = tuple[str, int]

# What the real node's channel sets (cynode.node.cpclient, which services may not
# import): gRPC's defaults (no client keepalive: the control-plane port pings) but for a
# receive limit large enough for the biggest assignment.
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_receive_message_length", 192 * 1024 * 1024),
)


async def completed_runtime(spec: job_pb2.JobSpec) -> job_pb2.JobResult:
    """Does nothing and succeeds; the default runtime."""
    return job_pb2.JobResult(status=job_pb2.JOB_STATUS_COMPLETED, exit_code=0, stdout=b"ok\n")


def _now_ts(msg: Any) -> Any:
    msg.FromDatetime(datetime.now(UTC))
    return msg


class SimNode:
    def __init__(
        self,
        target: str,
        psk: str,
        slug: str,
        *,
        slots: int = 1,
        inference: bool = False,
        runtime: Runtime | None = None,
        channel: grpc.aio.Channel | None = None,
        stream_output: bool = True,
        send_started: bool = True,
        backoff: tuple[float, float] = (0.05, 2.0),
        batching: bool = True,
        warm_ready: int = 0,
    ) -> None:
        self.target = target
        self.slug = slug
        self.slots = slots
        self.inference = inference
        # What each Ready says of warm sandboxes at hand (a real node counts its pool).
        self.warm_ready = warm_ready
        self._psk = psk
        self._runtime = runtime or completed_runtime
        self._own_channel = channel is None
        self._channel = channel or grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        self._nodes = nodes_pb2_grpc.NodeServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._dispatch = dispatch_pb2_grpc.DispatchServiceStub(  # type: ignore[no-untyped-call]
            self._channel
        )
        self._stream_output = stream_output
        self._send_started = send_started
        self._backoff = backoff
        # False: a node from before batching, which neither sends nor asks for batches.
        self.batching = batching
        # The current stream's HelloAck said the orchestrator reads batches.
        self._peer_batches = False
        self.token = ""
        self.node_id = ""
        self.config_version = ""
        self.heartbeat_seconds = 10.0
        self.lease_seconds = 30
        # What happened, for tests to inspect.
        self.assignments: list[job_pb2.JobSpec] = []
        self.cancels: list[dispatch_pb2.CancelJob] = []
        self.acked: list[Key] = []
        self.config_changes: list[str] = []
        self.hello_acks = 0
        # Batches received and sent (messages that carried several).
        self.batches_in = 0
        self.batches_out = 0
        self.spool: dict[Key, job_pb2.JobResult] = {}
        self.running: dict[Key, asyncio.Task[None]] = {}
        self.connected = asyncio.Event()
        self.on_ack: Callable[[Key], None] | None = None
        self._out: asyncio.Queue[dispatch_pb2.ConnectRequest | None] | None = None
        self._call: Any = None
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()

    # -- life cycle ---------------------------------------------------------------------

    async def start(self, *, wait: bool = True) -> None:
        await self.register()
        await self.fetch_config()
        self._loop_task = asyncio.create_task(self._loop(), name=f"simnode-{self.slug}")
        if wait:
            await asyncio.wait_for(self.connected.wait(), 30)

    async def register(self) -> nodes_pb2.RegisterNodeResponse:
        resp: nodes_pb2.RegisterNodeResponse = await self._nodes.RegisterNode(
            nodes_pb2.RegisterNodeRequest(psk=self._psk, capability=self.capability())
        )
        self.token = resp.auth.node_jwt
        self.node_id = resp.node_id
        return resp

    def capability(self) -> nodes_pb2.CapabilityReport:
        report = nodes_pb2.CapabilityReport(
            version=1,
            node=nodes_pb2.NodeIdentity(node_slug=self.slug, name=self.slug, labels=["sim"]),
            platform=nodes_pb2.Platform(os="linux", arch="amd64"),
            container_runtime=nodes_pb2.ContainerRuntime(runtime="sim", version="0"),
            compute=nodes_pb2.Compute(cpu_cores=2, ram_mb=2048),
            sandbox=nodes_pb2.SandboxCapability(
                supported=True, features=["sim"], max_concurrency=self.slots
            ),
            inference=nodes_pb2.InferenceCapability(
                supported=self.inference,
                mode="existing" if self.inference else "none",
                existing_service=self.inference,
                running=self.inference,
                models=["sim-model"] if self.inference else [],
            ),
        )
        _now_ts(report.reported_at)
        return report

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)

    async def fetch_config(self) -> nodes_pb2.GetNodeConfigResponse:
        config: nodes_pb2.GetNodeConfigResponse = await self._nodes.GetNodeConfig(
            nodes_pb2.GetNodeConfigRequest(), metadata=self.metadata
        )
        ack = nodes_pb2.AckNodeConfigRequest(
            version=1,
            node_slug=self.slug,
            config_version=config.config_version,
            status="applied",
        )
        _now_ts(ack.ack_at)
        await self._nodes.AckNodeConfig(ack, metadata=self.metadata)
        self.config_version = config.config_version
        return config

    async def stop(self) -> None:
        """Graceful: half-closes the stream and closes the channel; running jobs end
        without results (the orchestrator's leases deal with them)."""
        self._stopping = True
        for task in list(self.running.values()):
            task.cancel()
        if self._out is not None:
            self._out.put_nowait(None)
        await self._end_loop()

    async def kill(self) -> None:
        """A crash: the stream is cut with no goodbye and nothing more is sent."""
        self._stopping = True
        for task in list(self.running.values()):
            task.cancel()
        if self._call is not None:
            self._call.cancel()
        await self._end_loop()

    def disconnect(self) -> None:
        """A network blip: cuts the current stream; the node reconnects with backoff."""
        if self._call is not None:
            self._call.cancel()

    async def _end_loop(self) -> None:
        if self._loop_task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._loop_task), 5)
            except (TimeoutError, asyncio.CancelledError):
                self._loop_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._loop_task
        if self.running:
            await asyncio.gather(*self.running.values(), return_exceptions=True)
        if self._own_channel:
            await self._channel.close(grace=None)

    # -- the stream ---------------------------------------------------------------------

    async def _loop(self) -> None:
        delay = self._backoff[0]
        while not self._stopping:
            try:
                await self._session()
                delay = self._backoff[0] if self.connected.is_set() else delay
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNAUTHENTICATED and not self._stopping:
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        await self.register()
                log.debug("simnode %s stream ended: %s", self.slug, exc.code())
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._stopping or (task is not None and task.cancelling()):
                    raise
                # Our own call.cancel() (disconnect) surfaces as CancelledError: reconnect.
            finally:
                if self.connected.is_set():
                    delay = self._backoff[0]
                self.connected.clear()
                self._out = None
                self._call = None
            if self._stopping:
                return
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self._backoff[1])

    async def _session(self) -> None:
        out: asyncio.Queue[dispatch_pb2.ConnectRequest | None] = asyncio.Queue()
        self._peer_batches = False
        hello = dispatch_pb2.Hello(
            node_slug=self.slug, config_version=self.config_version, accepts_batches=self.batching
        )
        for key in self.running:
            hello.held_jobs.add(job_id=key[0], attempt=key[1], has_result=False)
        for key in self.spool:
            hello.held_jobs.add(job_id=key[0], attempt=key[1], has_result=True)
        out.put_nowait(dispatch_pb2.ConnectRequest(hello=hello))
        free = self.slots - len(self.running)
        if free > 0:
            out.put_nowait(self._ready(free))

        async def requests() -> AsyncIterator[dispatch_pb2.ConnectRequest]:
            while True:
                msg = await out.get()
                if msg is None:
                    return
                if not self._peer_batches or out.empty():
                    yield msg
                    continue
                # Whatever else is queued right now goes in the same write.
                queued, end = [msg], False
                while not out.empty():
                    more = out.get_nowait()
                    if more is None:
                        end = True
                        break
                    queued.append(more)
                for one in coalesce(queued, self._request_batch):
                    yield one
                if end:
                    return

        self._out = out
        call = self._dispatch.Connect(requests(), metadata=self.metadata)
        self._call = call
        beats: asyncio.Task[None] | None = None
        try:
            async for resp in call:
                kind = resp.WhichOneof("msg")
                if kind == "hello_ack":
                    self.hello_acks += 1
                    self.heartbeat_seconds = float(resp.hello_ack.heartbeat_seconds or 10)
                    self.lease_seconds = resp.hello_ack.lease_seconds
                    self.node_id = resp.hello_ack.node_id
                    self._peer_batches = self.batching and resp.hello_ack.accepts_batches
                    for result in self.spool.values():
                        self._send(dispatch_pb2.ConnectRequest(job_result=result))
                    beats = asyncio.create_task(self._heartbeats(out))
                    self.connected.set()
                elif kind == "batch":
                    self.batches_in += 1
                    for item in resp.batch.items:
                        self._handle(item, item.WhichOneof("msg"))
                else:
                    self._handle(resp, kind)
        finally:
            if beats is not None:
                beats.cancel()

    def _request_batch(
        self, items: list[dispatch_pb2.ConnectRequest]
    ) -> dispatch_pb2.ConnectRequest:
        self.batches_out += 1
        return dispatch_pb2.ConnectRequest(batch=dispatch_pb2.RequestBatch(items=items))

    def _handle(self, resp: dispatch_pb2.ConnectResponse, kind: str | None) -> None:
        if kind == "assignment":
            self._assigned(resp.assignment.spec)
        elif kind == "cancel":
            self._cancel(resp.cancel)
        elif kind == "result_ack":
            self._acked((resp.result_ack.job_id, resp.result_ack.attempt))
        elif kind == "config_changed":
            self.config_changes.append(resp.config_changed.config_version)
            self._tasks.add(asyncio.create_task(self._refetch_config()))

    def _ready(self, free_slots: int) -> dispatch_pb2.ConnectRequest:
        ready = dispatch_pb2.Ready(free_slots=free_slots, warm_ready=self.warm_ready)
        return dispatch_pb2.ConnectRequest(ready=ready)

    def _send(self, msg: dispatch_pb2.ConnectRequest) -> None:
        if self._out is not None:
            self._out.put_nowait(msg)

    async def _heartbeats(self, out: asyncio.Queue[dispatch_pb2.ConnectRequest | None]) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            beat = dispatch_pb2.Heartbeat()
            _now_ts(beat.at)
            for job_id, attempt in self.running:
                beat.running.add(job_id=job_id, attempt=attempt)
            out.put_nowait(dispatch_pb2.ConnectRequest(heartbeat=beat))

    async def _refetch_config(self) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await self.fetch_config()

    # -- jobs ---------------------------------------------------------------------------

    def _assigned(self, spec: job_pb2.JobSpec) -> None:
        self.assignments.append(spec)
        key = (spec.job_id, spec.attempt)
        if key in self.running or key in self.spool:
            return
        self.running[key] = asyncio.create_task(self._run(spec))

    def _cancel(self, cancel: dispatch_pb2.CancelJob) -> None:
        self.cancels.append(cancel)
        task = self.running.get((cancel.job_id, cancel.attempt))
        if task is not None:
            task.cancel()

    def _acked(self, key: Key) -> None:
        self.spool.pop(key, None)
        self.acked.append(key)
        if self.on_ack is not None:
            self.on_ack(key)

    async def _run(self, spec: job_pb2.JobSpec) -> None:
        key = (spec.job_id, spec.attempt)
        started = datetime.now(UTC)
        if self._send_started:
            msg = dispatch_pb2.JobStarted(job_id=spec.job_id, attempt=spec.attempt)
            msg.started_at.FromDatetime(started)
            self._send(dispatch_pb2.ConnectRequest(job_started=msg))
        try:
            result = await self._runtime(spec)
        except asyncio.CancelledError:
            if self._stopping:
                self.running.pop(key, None)
                raise
            result = job_pb2.JobResult(
                status=job_pb2.JOB_STATUS_CANCELED, exit_code=-1, reason=Reason.CANCELED
            )
        except Exception as exc:
            result = job_pb2.JobResult(
                status=job_pb2.JOB_STATUS_FAILED,
                exit_code=-1,
                reason="error",
                stderr=str(exc).encode(),
            )
        result.job_id, result.attempt, result.node_id = spec.job_id, spec.attempt, self.node_id
        if not result.HasField("started_at"):
            result.started_at.FromDatetime(started)
        if not result.HasField("ended_at"):
            _now_ts(result.ended_at)
        if self._stream_output:
            for stream, data in (("stdout", result.stdout), ("stderr", result.stderr)):
                if data:
                    chunk = dispatch_pb2.OutputChunk(
                        job_id=spec.job_id,
                        attempt=spec.attempt,
                        stream=stream,
                        data=data,
                        offset=0,
                    )
                    self._send(dispatch_pb2.ConnectRequest(output_chunk=chunk))
        self.spool[key] = result
        self.running.pop(key, None)
        self._send(dispatch_pb2.ConnectRequest(job_result=result))
        self._send(self._ready(1))
