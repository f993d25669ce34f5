"""ArtifactUploadService: nodes hand over the files their jobs left (SPEC §7.11).

An artifact may be uploaded only by the node whose result announced it. Bytes are
appended to the upload's `.part` file as they come and made durable before the answer
names the new offset, so a node that reconnects (or a restarted orchestrator) resumes
where the file ends. When the last byte is in, the upload is checked against the
announced SHA-256 and becomes a blob; every artifact row with that SHA-256 is then
marked stored. Content already stored (another job made the same file) is not sent
again. One upload per artifact at a time on this replica: a second waits its turn.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cynode.controlplane.v1 import artifacts_pb2, artifacts_pb2_grpc
from cynode.orchestrator.artifacts.blobs import BlobError, Corrupt, FsBlobStore, Upload
from cynode.orchestrator.artifacts.records import (
    UploadTarget,
    find_upload,
    lock_content,
    mark_stored_by_sha,
)
from cynode.orchestrator.controlplane.tokens import require_node
from cynode.orchestrator.store.models import utcnow

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
NOT_ANNOUNCED = "no such artifact of this node's results"


# Chunks received but not yet written that one upload may hold (1 MiB each).
WRITE_AHEAD = 4


class _Writer:
    """Hashes and appends an upload's chunks in a thread of its own, in order, while the
    event loop receives the next ones (the stream does not wait for each write); at
    most WRITE_AHEAD chunks wait. After a failed write nothing more is written, so the
    `.part` never holds bytes past a gap."""

    def __init__(self, upload: Upload, hasher: Any) -> None:
        self._upload = upload
        self._hasher = hasher
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="artifact-upload")
        self._pending: deque[asyncio.Future[None]] = deque()
        self._error: BaseException | None = None

    def _write(self, data: bytes) -> None:
        if self._error is not None:
            return
        try:
            if self._hasher is not None:
                self._hasher.update(data)
            self._upload.write(data)
        except BaseException as exc:  # raised in the event loop by put or finish
            self._error = exc

    async def put(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        loop = asyncio.get_running_loop()
        self._pending.append(loop.run_in_executor(self._pool, self._write, data))
        if len(self._pending) >= WRITE_AHEAD:
            await self._pending.popleft()

    async def finish(self) -> None:
        """Every chunk handed over is written (or a write failed: raised here). Waits
        for the thread itself, so nothing writes once this returns, even if cancelled."""
        self._pending.clear()
        done = asyncio.ensure_future(asyncio.to_thread(self._pool.shutdown, wait=True))
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            await done  # the caller fsyncs next: the thread must have stopped writing
            raise
        if self._error is not None:
            raise self._error


class ArtifactUploadServicer(artifacts_pb2_grpc.ArtifactUploadServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        engine: AsyncEngine,
        blobs: FsBlobStore,
        jwt_secret: str,
        on_stored: Callable[[list[str]], None] = lambda tasks: None,
        in_tx: Callable[[AsyncConnection, set[str]], Awaitable[None]] | None = None,
    ) -> None:
        self._engine = engine
        self._blobs = blobs
        self._secret = jwt_secret
        # Tasks whose artifacts became stored: `in_tx` inside the transaction that
        # marks them (NOTIFY to the other replicas), `on_stored` after it (this
        # replica's bus). Both wake the listings that wait for a set (SPEC §2.11).
        self._on_stored = on_stored
        self._in_tx = in_tx
        # One lock per artifact being uploaded, with how many calls hold or wait for it;
        # it goes when the last one is done.
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    async def _target(
        self, context: Context, job_id: str, attempt: int, artifact_id: str
    ) -> UploadTarget:
        claims = await require_node(context, self._secret)
        async with self._engine.connect() as conn:
            target = await find_upload(conn, claims.node_id, job_id, attempt, artifact_id)
        if target is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, NOT_ANNOUNCED)
        return target

    async def _already_stored(self, target: UploadTarget) -> bool:
        """True when the blob exists (this artifact's or the same content's). Looked at
        and recorded under the content's lock: the retention sweep judges a blob under
        it too, so it cannot delete the blob between the look and the record."""
        if target.stored:
            return True
        async with self._engine.begin() as conn:
            await lock_content(conn, target.sha256)
            if not await asyncio.to_thread(self._blobs.has, target.sha256):
                return False
            tasks = await self._mark_stored(conn, target.sha256)
        self._on_stored(tasks)
        return True

    async def _mark_stored(self, conn: AsyncConnection, sha256: str) -> list[str]:
        tasks = await mark_stored_by_sha(conn, sha256, utcnow())
        if tasks and self._in_tx is not None:
            await self._in_tx(conn, set(tasks))
        return tasks

    async def _seal(self, target: UploadTarget, digest: str | None) -> None:
        """The upload becomes the blob and its rows are marked stored, under the
        content's lock (as in `_already_stored`). Raises Corrupt."""
        async with self._engine.begin() as conn:
            await lock_content(conn, target.sha256)
            await asyncio.to_thread(
                self._blobs.seal, target.artifact_id, target.sha256, digest=digest
            )
            tasks = await self._mark_stored(conn, target.sha256)
        self._on_stored(tasks)

    async def GetUploadOffset(
        self, request: artifacts_pb2.GetUploadOffsetRequest, context: Context
    ) -> artifacts_pb2.GetUploadOffsetResponse:
        target = await self._target(context, request.job_id, request.attempt, request.artifact_id)
        if await self._already_stored(target):
            return artifacts_pb2.GetUploadOffsetResponse(offset=target.size_bytes, stored=True)
        held = await asyncio.to_thread(self._blobs.partial_size, target.artifact_id)
        return artifacts_pb2.GetUploadOffsetResponse(offset=min(held, target.size_bytes))

    async def UploadArtifact(
        self,
        request_iterator: AsyncIterator[artifacts_pb2.UploadArtifactRequest],
        context: Context,
    ) -> artifacts_pb2.UploadArtifactResponse:
        try:
            first = await anext(request_iterator)
        except StopAsyncIteration:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "empty upload")
        if first.WhichOneof("msg") != "header":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "first message must be header")
        header = first.header
        target = await self._target(context, header.job_id, header.attempt, header.artifact_id)
        key = target.artifact_id
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                return await self._receive(target, header.offset, request_iterator, context)
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    async def _receive(
        self,
        target: UploadTarget,
        offset: int,
        request_iterator: AsyncIterator[artifacts_pb2.UploadArtifactRequest],
        context: Context,
    ) -> artifacts_pb2.UploadArtifactResponse:
        if await self._already_stored(target):
            return artifacts_pb2.UploadArtifactResponse(offset=target.size_bytes, stored=True)
        if offset < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "negative offset")
        key = target.artifact_id
        try:
            upload: Upload = await asyncio.to_thread(self._blobs.resume, key, offset)
        except BlobError as exc:
            await context.abort(grpc.StatusCode.OUT_OF_RANGE, str(exc))
        # From zero, the hash is taken as the bytes come; a resumed upload is read again.
        hasher = hashlib.sha256() if offset == 0 else None
        # Hashed and written in a thread while the next chunks arrive (hashlib lets go of
        # the GIL for big buffers).
        writer = _Writer(upload, hasher)
        received = offset
        try:
            async for message in request_iterator:
                data = message.data
                received += len(data)
                if received > target.size_bytes:
                    await writer.finish()
                    await asyncio.to_thread(self._blobs.discard, key)
                    await context.abort(
                        grpc.StatusCode.DATA_LOSS,
                        f"more bytes than the {target.size_bytes} announced",
                    )
                await writer.put(data)
        finally:
            # Whatever arrived is written and made durable: a cut stream resumes here.
            try:
                await writer.finish()
            finally:
                await asyncio.to_thread(upload.close)
        if upload.offset < target.size_bytes:
            return artifacts_pb2.UploadArtifactResponse(offset=upload.offset)
        digest = hasher.hexdigest() if hasher is not None else None
        try:
            await self._seal(target, digest)
        except Corrupt as exc:
            log.warning("artifact %s: %s", key, exc)
            await context.abort(grpc.StatusCode.DATA_LOSS, "content does not match its sha256")
        return artifacts_pb2.UploadArtifactResponse(offset=target.size_bytes, stored=True)
