"""The node's end of `DispatchService.Connect`.

Per connection: Hello (held jobs: running ones and spooled results) → HelloAck → every
spooled result resent → Ready(free slots), a credit grant, then Ready(1) after each
result → heartbeats at the server's interval while
reading assignments, cancels, result acks and config changes. Jobs outlive connections:
each is a `JobWorker` task owned by this client, and its result is sent while it is
written to the spool (then resent from there until acknowledged), so a dropped stream
costs only live output chunks, never a result.
The stream is reopened with jittered exponential backoff; UNAUTHENTICATED drops the
JWT so the next attempt registers again.

Batching (see the orchestrator's `controlplane.dispatch` for the protocol): Hello says
this node reads ResponseBatch; when the HelloAck says the orchestrator reads
RequestBatch, the writer sends whatever is queued at the moment it writes as one batch
(never waiting for more). Batches received are handled item by item, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol

import grpc

from cynode.controlplane.v1 import dispatch_pb2, dispatch_pb2_grpc
from cynode.jobs.v1 import job_pb2

from .backoff import Backoff
from .job_worker import JobKey, JobWorker, RunnerFactory
from .metrics import NodeMetrics
from .readiness import Readiness
from .spool import ResultSpool

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_S = 10.0
# How long a finished job's removal waits for the result's acknowledgement (usually a
# few ms); a stream that is down must not keep the job's slot much longer.
RESULT_ACK_WAIT_S = 0.5
# A batch stays well under the 4 MiB gRPC receive limit the orchestrator may keep; a
# larger message (a result with long output) goes alone.
BATCH_BYTES = 1 << 20
# The end-of-stream marker of grpc.aio reads (missing from grpc-stubs).
_EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]


class Auth(Protocol):
    async def metadata(self) -> tuple[tuple[str, str], ...]: ...

    def invalidate(self) -> None: ...


class StreamClosed(ConnectionError):
    pass


def coalesce(
    messages: list[dispatch_pb2.ConnectRequest], limit: int = BATCH_BYTES
) -> list[dispatch_pb2.ConnectRequest]:
    """`messages` in order as few writes: runs of them wrapped in RequestBatch of at most
    `limit` bytes; a run of one (or a message over the limit) goes unwrapped."""
    if len(messages) == 1:
        return messages
    writes: list[dispatch_pb2.ConnectRequest] = []
    group: list[dispatch_pb2.ConnectRequest] = []
    size = 0
    for msg in [*messages, None]:
        n = 0 if msg is None else msg.ByteSize()
        if group and (msg is None or size + n > limit):
            batch = dispatch_pb2.ConnectRequest(batch=dispatch_pb2.RequestBatch(items=group))
            writes.append(group[0] if len(group) == 1 else batch)
            group, size = [], 0
        if msg is not None:
            group.append(msg)
            size += n
    return writes


def _now_ts() -> dispatch_pb2.Heartbeat:
    beat = dispatch_pb2.Heartbeat()
    beat.at.FromDatetime(datetime.now(UTC))
    return beat


class DispatchClient:
    def __init__(
        self,
        *,
        node_slug: str,
        channel: grpc.aio.Channel,
        auth: Auth,
        spool: ResultSpool,
        runner_factory: RunnerFactory,
        max_concurrency: int,
        readiness: Readiness | None = None,
        metrics: NodeMetrics | None = None,
        backoff: Backoff | None = None,
        config_version: Callable[[], str] = lambda: "",
        on_config_changed: Callable[[str], Awaitable[None]] | None = None,
        warm_ready: Callable[[], int] = lambda: 0,
        on_results_acked: Callable[[], None] | None = None,
    ) -> None:
        self.node_slug = node_slug
        self._stub = dispatch_pb2_grpc.DispatchServiceStub(channel)  # type: ignore[no-untyped-call]
        self._auth = auth
        self.spool = spool
        self._runner_factory = runner_factory
        self.max_concurrency = max_concurrency
        self.readiness = readiness or Readiness()
        self.metrics = metrics or NodeMetrics()
        self.backoff = backoff or Backoff()
        self._config_version = config_version
        self._on_config_changed = on_config_changed
        self._warm_ready = warm_ready
        # Told when a stream opens and when a result is acknowledged: the artifact
        # uploader then sends what the orchestrator now expects (SPEC §7.11).
        self._on_results_acked = on_results_acked or (lambda: None)
        self.workers: dict[JobKey, JobWorker] = {}
        # Jobs whose result is out but whose containers/pod are still being removed:
        # each keeps its slot until then, so removals never pile up beyond the slots.
        self.releasing: dict[JobKey, JobWorker] = {}
        self.node_id = ""
        self.heartbeat_s = DEFAULT_HEARTBEAT_S
        self.connections = 0
        self.connected = asyncio.Event()
        # The current stream's HelloAck said the orchestrator reads RequestBatch.
        self.peer_batches = False
        self._outbox: asyncio.Queue[dispatch_pb2.ConnectRequest | None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        # Results sent and not yet acknowledged, for result_delivered (job_worker.py).
        self._delivered: dict[tuple[str, int], asyncio.Event] = {}
        # Results sent whose spool write is still under way (job_finished).
        self._writing: dict[JobKey, job_pb2.JobResult] = {}
        self._stopping = False

    # -- what the rest of the node sees ---------------------------------------------

    @property
    def free_slots(self) -> int:
        return max(0, self.max_concurrency - len(self.workers) - len(self.releasing))

    def held_jobs(self) -> list[dispatch_pb2.HeldJob]:
        held = {key: dispatch_pb2.HeldJob(job_id=key[0], attempt=key[1]) for key in self.workers}
        for result in self.spool.all():
            key = (result.job_id, result.attempt)
            held[key] = dispatch_pb2.HeldJob(
                job_id=result.job_id, attempt=result.attempt, has_result=True
            )
        return list(held.values())

    async def run(self) -> None:
        """Keeps a stream open until `stop()`; never returns on its own otherwise."""
        while not self._stopping:
            try:
                await self._connect_once()
                detail = "stream closed by the server"
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                detail = f"stream failed: {code.name}: {exc.details() or ''}".rstrip(": ")
                if code == grpc.StatusCode.UNAUTHENTICATED:
                    self._auth.invalidate()
            except Exception as exc:
                detail = f"stream failed: {type(exc).__name__}: {exc}"
            self._disconnected(detail)
            if self._stopping:
                break
            delay = self.backoff.next_delay()
            log.warning("dispatch %s; reconnecting in %.1fs", detail, delay)
            await asyncio.sleep(delay)

    async def stop(self) -> None:
        """Stops running jobs (their containers go) without reporting them: the lease
        expires and the orchestrator requeues them, as for a node that died. Finished
        jobs whose removal is under way are waited for, not interrupted."""
        self._stopping = True
        running = [w.task for w in self.workers.values() if w.task is not None]
        for task in running:
            task.cancel()
        releasing = [w.task for w in self.releasing.values() if w.task is not None]
        if running or releasing:
            await asyncio.wait([*running, *releasing], timeout=30)
        if self._outbox is not None:
            self._outbox.put_nowait(None)

    # -- one connection ---------------------------------------------------------------

    def send(self, message: dispatch_pb2.ConnectRequest) -> bool:
        """Queues a message on the current stream; False when there is none."""
        if self._outbox is None:
            return False
        self._outbox.put_nowait(message)
        return True

    async def _connect_once(self) -> None:
        metadata = await self._auth.metadata()
        call = self._stub.Connect(metadata=metadata)
        hello = dispatch_pb2.Hello(
            node_slug=self.node_slug,
            held_jobs=self.held_jobs(),
            config_version=self._config_version(),
            accepts_batches=True,
        )
        await call.write(dispatch_pb2.ConnectRequest(hello=hello))
        first = await call.read()
        if not isinstance(first, dispatch_pb2.ConnectResponse) or not first.HasField("hello_ack"):
            raise StreamClosed("the server did not answer Hello with HelloAck")
        ack = first.hello_ack
        self.node_id = ack.node_id or self.node_id
        self.peer_batches = ack.accepts_batches
        if ack.heartbeat_seconds > 0:
            self.heartbeat_s = float(ack.heartbeat_seconds)
        outbox: asyncio.Queue[dispatch_pb2.ConnectRequest | None] = asyncio.Queue()
        self._outbox = outbox
        writer = asyncio.create_task(self._write_loop(call, outbox))
        heart = asyncio.create_task(self._heartbeat_loop())
        try:
            for result in self.spool.all():
                self.send(dispatch_pb2.ConnectRequest(job_result=result))
            self._send_ready()
            self.connections += 1
            self.backoff.reset()
            self.connected.set()
            self.readiness.passed("dispatch", f"connected as {self.node_id or self.node_slug}")
            log.info("dispatch stream open (heartbeat %.0fs)", self.heartbeat_s)
            self._on_results_acked()
            await self._read_loop(call, writer)
        finally:
            self._outbox = None
            heart.cancel()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await writer
            call.cancel()

    def _disconnected(self, detail: str) -> None:
        self.connected.clear()
        self._outbox = None
        self.readiness.failed("dispatch", detail)

    async def _write_loop(
        self,
        call: grpc.aio.StreamStreamCall[dispatch_pb2.ConnectRequest, dispatch_pb2.ConnectResponse],
        outbox: asyncio.Queue[dispatch_pb2.ConnectRequest | None],
    ) -> None:
        while True:
            queued = [await outbox.get()]
            if self.peer_batches:
                # Whatever else is queued right now goes in the same write.
                while queued[-1] is not None and not outbox.empty():
                    queued.append(outbox.get_nowait())
            end = queued[-1] is None
            for write in coalesce([m for m in queued if m is not None]):
                await call.write(write)
            if end:
                await call.done_writing()
                return

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            beat = _now_ts()
            beat.running.extend(
                dispatch_pb2.HeldJob(job_id=k[0], attempt=k[1]) for k in self.workers
            )
            self.send(dispatch_pb2.ConnectRequest(heartbeat=beat))

    async def _read_loop(
        self,
        call: grpc.aio.StreamStreamCall[dispatch_pb2.ConnectRequest, dispatch_pb2.ConnectResponse],
        writer: asyncio.Task[None],
    ) -> None:
        while True:
            read = asyncio.ensure_future(call.read())
            done, _ = await asyncio.wait({read, writer}, return_when=asyncio.FIRST_COMPLETED)
            if read not in done:
                # The writer ended: we closed, or a write failed because the server
                # finished the call (then the read side says how; EOF or an error).
                if not writer.cancelled() and writer.exception() is not None and call.done():
                    await read
                    return
                read.cancel()
                writer.result()
                return
            message = read.result()
            if message is _EOF or not isinstance(message, dispatch_pb2.ConnectResponse):
                return
            self._handle(message)

    def _handle(self, message: dispatch_pb2.ConnectResponse) -> None:
        kind = message.WhichOneof("msg")
        if kind == "batch":
            for item in message.batch.items:
                if item.HasField("batch"):
                    log.debug("nested batch ignored")
                else:
                    self._handle(item)
        elif kind == "assignment":
            self._accept(message.assignment.spec)
        elif kind == "cancel":
            worker = self.workers.get((message.cancel.job_id, message.cancel.attempt))
            if worker is not None:
                worker.cancel(message.cancel.reason)
            else:
                log.info("cancel for job %s which is not running here", message.cancel.job_id)
        elif kind == "result_ack":
            key = (message.result_ack.job_id, message.result_ack.attempt)
            if (delivered := self._delivered.get(key)) is not None:
                delivered.set()
            self._drop_acked(key)
        elif kind == "config_changed" and self._on_config_changed is not None:
            self._spawn(self._on_config_changed(message.config_changed.config_version))
        elif kind == "hello_ack":
            log.debug("extra HelloAck ignored")

    def _drop_acked(self, key: JobKey) -> None:
        """An acknowledged result leaves the spool, then the artifact uploader is woken:
        it skips a job while its result file is there, so a wake before the delete (an
        ack that came during the spool write) would leave the job's artifacts unsent."""
        self.spool.delete(*key)
        self._on_results_acked()

    def _spawn(self, coro: Awaitable[None]) -> None:
        async def wrapper() -> None:
            try:
                await coro
            except Exception:
                log.exception("background handler failed")

        task = asyncio.create_task(wrapper())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _ready(self, free_slots: int) -> dispatch_pb2.ConnectRequest:
        # With the warm sandboxes at hand now, so the scheduler can prefer this node.
        ready = dispatch_pb2.Ready(free_slots=free_slots, warm_ready=self._warm_ready())
        return dispatch_pb2.ConnectRequest(ready=ready)

    def _send_ready(self) -> None:
        self.metrics.free_slots.set(self.free_slots)
        self.send(self._ready(self.free_slots))

    def _accept(self, spec: job_pb2.JobSpec) -> None:
        key = (spec.job_id, spec.attempt)
        # A result sent while its spool write is under way counts as spooled.
        spooled = self._writing.get(key)
        if spooled is None:
            if key in self.workers:
                return
            spooled = self.spool.get(*key)
        if spooled is not None:
            # Already ran: the orchestrator missed the result, so send it again.
            self.send(dispatch_pb2.ConnectRequest(job_result=spooled))
            return
        if self.free_slots == 0:
            log.warning("assignment %s beyond max_concurrency; running it anyway", spec.job_id)
        worker = JobWorker(spec, self._runner_factory, self, self.node_id)
        self.workers[key] = worker
        self.metrics.running.set(len(self.workers))
        self.metrics.free_slots.set(self.free_slots)
        worker.start()

    # -- JobSink: called from the job workers -------------------------------------------

    async def job_started(self, worker: JobWorker, started_at: datetime) -> None:
        waited = max(0.0, started_at.timestamp() - worker.accepted_wall.timestamp())
        self.metrics.container_start.observe(waited)
        path = (worker.runner.path if worker.runner is not None else "") or "cold"
        self.metrics.process_start.labels(path=path).observe(waited)
        msg = dispatch_pb2.JobStarted(job_id=worker.key[0], attempt=worker.key[1])
        msg.started_at.FromDatetime(started_at)
        self.send(dispatch_pb2.ConnectRequest(job_started=msg))

    async def job_output(self, worker: JobWorker, stream: str, data: bytes, offset: int) -> None:
        chunk = dispatch_pb2.OutputChunk(
            job_id=worker.key[0], attempt=worker.key[1], stream=stream, data=data, offset=offset
        )
        self.send(dispatch_pb2.ConnectRequest(output_chunk=chunk))

    async def job_finished(self, worker: JobWorker, result: job_pb2.JobResult) -> None:
        delivered = self._delivered.setdefault(worker.key, asyncio.Event())
        message = dispatch_pb2.ConnectRequest(job_result=result)
        # Sent while it is written to the spool (SPEC §4.9), not after: the fsyncs no
        # longer delay the result. Until the write is done the job stays in `workers`,
        # so a Hello in between lists it as running; a crash before both the delivery
        # and the write is a crash during the job (the lease runs out, it is requeued).
        outbox = self._outbox
        self.send(message)
        self._writing[worker.key] = result
        try:
            await asyncio.to_thread(self.spool.put, result)
        finally:
            self._writing.pop(worker.key, None)
        if delivered.is_set():
            # Acknowledged during the write: the ack's delete found no file yet.
            self._drop_acked(worker.key)
        elif self._outbox is not None and self._outbox is not outbox:
            # A stream opened during the write: its resend of the spool ran
            # before this file was there (and an old stream may have lost the result).
            self.send(message)
        if self.workers.pop(worker.key, None) is not None:
            self.releasing[worker.key] = worker
        self.metrics.record_result(result)
        self.metrics.running.set(len(self.workers))

    async def result_delivered(self, worker: JobWorker) -> None:
        delivered = self._delivered.get(worker.key)
        try:
            if delivered is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(delivered.wait(), RESULT_ACK_WAIT_S)
        finally:
            self._delivered.pop(worker.key, None)

    async def job_released(self, worker: JobWorker) -> None:
        # The job's slot is free only now: its containers, pod and volumes are gone.
        if self.releasing.pop(worker.key, None) is None:
            return
        if not self._stopping:
            # Ready is a credit grant that adds up: one freed slot, one credit.
            self.metrics.free_slots.set(self.free_slots)
            self.send(self._ready(1))
