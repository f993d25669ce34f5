"""Streams the container's stdout and stderr while it runs, capped per stream.

Before the container starts, the hook attaches to it (Podman's attach endpoint with
stream=true, logs=false): Podman is connected to conmon's attach socket by the time it
answers, so no byte the job writes, not even in its first instant, is missed; conmon
blocks rather than drop output for a slow reader. The stream ends as soon as the
container has exited, unlike following the k8s-file log, which Podman 4.3 polls and
ends up to 250 ms late; its end also tells the runner to look for the exit state.

A dedicated thread reads the stream and decodes its frames; the kept part of each chunk
(up to max_output_bytes per stream) goes into the job's OutputCapture and, through the
event loop, to on_output(stream, chunk, offset). Bytes past the cap are counted (for
the truncated flags) but neither kept nor forwarded, so memory stays bounded and the
live stream matches the final result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any

from podman import PodmanClient

from cynode.node.runtime import ops
from cynode.node.runtime.context import JobContext
from cynode.node.runtime.hooks import Hook
from cynode.node.runtime.output import (
    END,
    STDOUT,
    FrameDecoder,
    OutputCapture,
    RunnerEnd,
    RunnerStream,
)
from cynode.node.runtime.threads import in_thread

log = logging.getLogger(__name__)

# After the container stopped, how long the output stream may take to deliver its tail.
DRAIN_TIMEOUT_S = 10.0
_READ_SIZE = 65536

Emit = Callable[[str, bytes, int], None]


def _response_socket(response: Any) -> socket.socket | None:
    """The socket under a streamed podman-py response (urllib3 2 no longer exposes the
    connection once the response is handed out, so it is found through the body's file)."""
    raw = getattr(response, "raw", None)
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    if sock is None:
        body = getattr(getattr(raw, "_fp", None), "fp", None)
        sock = getattr(getattr(body, "raw", None), "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


class OutputAttach:
    """Blocking: attached to one container's stdout/stderr until the stream ends or close().

    open() before the container starts, then run() (on its own thread) to the end. With
    `stdin`, the same connection also carries what send() writes to the container's
    stdin (a warm sandbox's handoff; detach keys are off, so no byte is swallowed).
    """

    def __init__(
        self,
        client: PodmanClient,
        container_id: str,
        capture: OutputCapture | None = None,
        emit: Emit | None = None,
        *,
        stdin: bool = False,
        runner: RunnerStream | None = None,
        on_end: Callable[[RunnerEnd], None] | None = None,
    ) -> None:
        self._client = client
        self._container_id = container_id
        self._capture = capture
        self._emit = emit
        self._closed = threading.Event()
        self._response: object | None = None
        self._socket: socket.socket | None = None
        self._reading = False
        self._stdin = stdin
        # A warm sandbox's reporting runner: its stdout carries the job's streams framed
        # and the job's end, handed to on_end as soon as it is read.
        self._runner = runner
        self._on_end = on_end

    def bind(
        self,
        capture: OutputCapture,
        emit: Emit,
        runner: RunnerStream | None = None,
        on_end: Callable[[RunnerEnd], None] | None = None,
    ) -> None:
        """Gives an attach opened ahead of its job (a warm sandbox's) that job's capture
        and listeners; before run()."""
        self._capture, self._emit = capture, emit
        self._runner, self._on_end = runner, on_end

    def quiet(self) -> bool:
        """Whether the opened stream is still silent and open (blocking-free): a warm
        sandbox's runner says nothing before its job, so data or the stream's end
        means the container is no longer waiting."""
        sock = self._socket
        if sock is None or self._closed.is_set() or self._response is None:
            return False
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable

    def open(self) -> None:
        params: dict[str, Any] = {"stream": True, "stdout": True, "stderr": True, "logs": False}
        if self._stdin:
            params.update(stdin=True, detachKeys="")
        response = self._client.api.post(
            f"/containers/{self._container_id}/attach",
            params=params,
            stream=True,
            timeout=ops.JOB_LONG_TIMEOUT,
        )
        try:
            response.raise_for_status()
        except Exception:
            response.close()
            raise
        self._response = response
        self._socket = _response_socket(response)

    def send(self, data: bytes) -> None:
        """Writes to the container's stdin (blocking)."""
        if not self._stdin or self._socket is None:
            raise RuntimeError("this attach stream carries no stdin")
        self._socket.sendall(data)

    def run(self) -> None:
        response = self._response
        if response is None:
            raise RuntimeError("open() the attach stream first")
        raw = response.raw  # type: ignore[attr-defined]
        self._reading = True
        try:
            # read1: whatever has arrived, so output reaches on_output while the job runs
            # (read(n) would hold small writes back until n bytes came).
            self.pump(iter(lambda: raw.read1(_READ_SIZE), b""))
        except Exception:
            if not self._closed.is_set():  # a close() ends the read with an error
                raise
        finally:
            response.close()  # type: ignore[attr-defined]

    def pump(self, chunks: Iterable[bytes]) -> None:
        decoder = FrameDecoder()
        runner = self._runner
        for data in chunks:
            for stream, payload in decoder.feed(data):
                if runner is not None and stream == STDOUT:
                    self._take(runner.feed(payload))
                else:
                    self._take([(stream, payload)])
        if runner is not None:
            self._take(runner.flush())

    def _take(self, items: list[tuple[str, bytes]]) -> None:
        assert self._capture is not None and self._emit is not None, "bind() first"
        for stream, payload in items:
            if stream == END:
                assert self._runner is not None
                end = RunnerEnd.parse(payload, self._runner.nonce)
                if end is not None and self._on_end is not None:
                    self._on_end(end)
                continue
            kept = self._capture.add(stream, payload)
            if kept is not None:
                self._emit(stream, kept.data, kept.offset)

    def close(self) -> None:
        """End the stream; safe from any thread, and it never blocks.

        While run() reads, closing the response here would wait for the reader's
        buffer lock (a deadlock with a blocked read), so the socket is shut down
        instead: the read returns, and run() closes the response on its own thread.
        """
        self._closed.set()
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)
        if not self._reading and self._response is not None:
            with contextlib.suppress(Exception):
                self._response.close()  # type: ignore[attr-defined]


class OutputHook(Hook):
    name = "output"

    def __init__(self) -> None:
        self._attach: OutputAttach | None = None
        self._reader: asyncio.Future[None] | None = None
        self._forwarder: asyncio.Task[None] | None = None

    async def prestart(self, ctx: JobContext) -> None:
        assert ctx.container_id is not None
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, bytes, int] | None] = asyncio.Queue()

        def emit(stream: str, data: bytes, offset: int) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (stream, data, offset))

        def on_end(end: RunnerEnd) -> None:
            # After every output frame the runner sent: the forwarder ends once they
            # are delivered, and the runner learns the end now, not at the stream's end.
            loop.call_soon_threadsafe(queue.put_nowait, None)
            loop.call_soon_threadsafe(ctx.report_end, end)

        runner = RunnerStream(ctx.report_nonce) if ctx.report_nonce else None
        attach = ctx.attached
        if attach is not None:
            # A warm sandbox's, opened when it was made: no round trip to Podman now.
            attach.bind(ctx.output, emit, runner, on_end)
        else:
            attach = OutputAttach(
                ctx.client,
                ctx.container_id,
                ctx.output,
                emit,
                stdin=ctx.attach_stdin,
                runner=runner,
                on_end=on_end,
            )
            await asyncio.to_thread(attach.open)
        self._attach = attach
        if ctx.attach_stdin:
            ctx.send_stdin = attach.send

        def read() -> None:
            try:
                attach.run()
            finally:
                with contextlib.suppress(RuntimeError):  # loop closed: nobody listens
                    loop.call_soon_threadsafe(queue.put_nowait, None)
                    loop.call_soon_threadsafe(ctx.output_closed.set)

        self._reader = in_thread(read, name=f"output-{ctx.spec.job_id}")
        self._forwarder = asyncio.create_task(self._forward(ctx, queue))

    async def _forward(
        self, ctx: JobContext, queue: asyncio.Queue[tuple[str, bytes, int] | None]
    ) -> None:
        while (item := await queue.get()) is not None:
            if ctx.on_output is None:
                continue
            try:
                await ctx.on_output(*item)
            except Exception:
                # The job goes on; a broken listener must not decide its outcome.
                log.exception("on_output failed for job %s", ctx.spec.job_id)

    async def exited(self, ctx: JobContext) -> None:
        if self._reader is None or self._attach is None:
            return
        if ctx.reported_end is not None:
            # The runner's end came after all the job's output: nothing more to wait for
            # (the stream itself ends when the container does; poststop closes it).
            if self._forwarder is not None:
                await asyncio.wait({self._forwarder}, timeout=DRAIN_TIMEOUT_S)
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), DRAIN_TIMEOUT_S)
        except TimeoutError:
            log.warning("output stream of job %s did not end; closing it", ctx.spec.job_id)
            self._attach.close()
        except Exception as error:
            log.warning("output stream of job %s failed: %s", ctx.spec.job_id, error)
        if self._forwarder is not None:
            await asyncio.wait({self._forwarder}, timeout=DRAIN_TIMEOUT_S)

    async def poststop(self, ctx: JobContext) -> None:
        if self._attach is not None:
            self._attach.close()
        if self._forwarder is not None and not self._forwarder.done():
            self._forwarder.cancel()
            await asyncio.wait({self._forwarder})
        if self._reader is not None and self._reader.done() and not self._reader.cancelled():
            self._reader.exception()  # retrieved, so asyncio does not log it as lost
