"""Streams the container's stdout and stderr while it runs, capped per stream.

A dedicated thread follows the logs endpoint and decodes its frames; the kept part of
each chunk (up to max_output_bytes per stream) goes into the job's OutputCapture and,
through the event loop, to on_output(stream, chunk, offset). Bytes past the cap are
counted (for the truncated flags) but neither kept nor forwarded, so memory stays bounded
and the live stream matches the final result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

from podman import PodmanClient

from cynode.node.runtime.context import JobContext
from cynode.node.runtime.hooks import Hook
from cynode.node.runtime.output import FrameDecoder, OutputCapture
from cynode.node.runtime.threads import in_thread

log = logging.getLogger(__name__)

# After the container stopped, how long the log stream may take to deliver its tail.
DRAIN_TIMEOUT_S = 10.0
_READ_SIZE = 65536

Emit = Callable[[str, bytes, int], None]


class LogFollower:
    """Blocking: follows one container's logs until the stream ends or close()."""

    def __init__(
        self, client: PodmanClient, container_id: str, capture: OutputCapture, emit: Emit
    ) -> None:
        self._client = client
        self._container_id = container_id
        self._capture = capture
        self._emit = emit
        self._closed = threading.Event()
        self._response: object | None = None

    def run(self) -> None:
        response = self._client.api.get(
            f"/containers/{self._container_id}/logs",
            params={"follow": True, "stdout": True, "stderr": True},
            stream=True,
        )
        self._response = response
        try:
            response.raise_for_status()
            self.pump(response.iter_content(chunk_size=_READ_SIZE))
        except Exception:
            if not self._closed.is_set():  # a close() ends the read with an error
                raise
        finally:
            response.close()

    def pump(self, chunks: object) -> None:
        decoder = FrameDecoder()
        for data in chunks:  # type: ignore[attr-defined]
            for stream, payload in decoder.feed(data):
                kept = self._capture.add(stream, payload)
                if kept is not None:
                    self._emit(stream, kept.data, kept.offset)

    def close(self) -> None:
        self._closed.set()
        if self._response is not None:
            with contextlib.suppress(Exception):
                self._response.close()  # type: ignore[attr-defined]


class OutputHook(Hook):
    name = "output"

    def __init__(self) -> None:
        self._follower: LogFollower | None = None
        self._reader: asyncio.Future[None] | None = None
        self._forwarder: asyncio.Task[None] | None = None

    async def poststart(self, ctx: JobContext) -> None:
        assert ctx.container_id is not None
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, bytes, int] | None] = asyncio.Queue()

        def emit(stream: str, data: bytes, offset: int) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (stream, data, offset))

        follower = LogFollower(ctx.client, ctx.container_id, ctx.output, emit)

        def follow() -> None:
            try:
                follower.run()
            finally:
                with contextlib.suppress(RuntimeError):  # loop closed: nobody listens
                    loop.call_soon_threadsafe(queue.put_nowait, None)

        self._follower = follower
        self._reader = in_thread(follow, name=f"logs-{ctx.spec.job_id}")
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
        if self._reader is None or self._follower is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), DRAIN_TIMEOUT_S)
        except TimeoutError:
            log.warning("log stream of job %s did not end; closing it", ctx.spec.job_id)
            self._follower.close()
        except Exception as error:
            log.warning("log stream of job %s failed: %s", ctx.spec.job_id, error)
        if self._forwarder is not None:
            await asyncio.wait({self._forwarder}, timeout=DRAIN_TIMEOUT_S)

    async def poststop(self, ctx: JobContext) -> None:
        if self._follower is not None:
            self._follower.close()
        if self._forwarder is not None and not self._forwarder.done():
            self._forwarder.cancel()
            await asyncio.wait({self._forwarder})
        if self._reader is not None and self._reader.done() and not self._reader.cancelled():
            self._reader.exception()  # retrieved, so asyncio does not log it as lost
