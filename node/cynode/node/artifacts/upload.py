"""Uploading spooled artifacts to the orchestrator, resumably (SPEC §7.11).

Once the orchestrator has acknowledged a job's result (so it knows which artifacts to
expect), each artifact still in the spool is sent: GetUploadOffset says how much the
orchestrator already holds, UploadArtifact streams the rest in chunks. The spool keeps
the file until the answer says it is stored, so a kill -9 of either side mid-upload
costs at most a resend from the last offset the orchestrator had written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import BinaryIO, Protocol

import grpc

from cynode.controlplane.v1 import artifacts_pb2, artifacts_pb2_grpc
from cynode.node.artifacts.spool import ArtifactSpool, Pending
from cynode.node.backoff import Backoff

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
# An artifact the orchestrator found corrupt this many times in a row is given up on.
MAX_CORRUPT = 3
RPC_TIMEOUT_S = 15.0


class Auth(Protocol):
    async def metadata(self) -> tuple[tuple[str, str], ...]: ...

    def invalidate(self) -> None: ...


class Acked(Protocol):
    def has(self, job_id: str, attempt: int) -> bool:
        """True while the job's result waits for the orchestrator's acknowledgement."""
        ...


class ArtifactUploader:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        auth: Auth,
        spool: ArtifactSpool,
        results: Acked,
        *,
        chunk_bytes: int = CHUNK_BYTES,
        backoff: Backoff | None = None,
    ) -> None:
        self._stub = artifacts_pb2_grpc.ArtifactUploadServiceStub(channel)  # type: ignore[no-untyped-call]
        self._auth = auth
        self.spool = spool
        self._results = results
        self._chunk = chunk_bytes
        self._backoff = backoff or Backoff()
        self._wake = asyncio.Event()
        self._corrupt: dict[str, int] = {}
        self.stored = 0

    def wake(self) -> None:
        """Something may be ready to upload (a result was acknowledged, a stream opened)."""
        self._wake.set()

    async def run(self) -> None:
        """Uploads whatever is ready each time it is woken; retries with backoff."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.upload_ready()
                self._backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = self._backoff.next_delay()
                log.warning("artifact upload failed (%s); retrying in %.1fs", _describe(exc), delay)
                await asyncio.sleep(delay)
                self._wake.set()

    async def upload_ready(self) -> int:
        """One pass over every job whose result was acknowledged; the number stored."""
        stored = 0
        for job_id, attempt in await asyncio.to_thread(self.spool.jobs):
            if self._results.has(job_id, attempt):
                continue  # the orchestrator may not know this set yet
            for item in await asyncio.to_thread(self.spool.pending, job_id, attempt):
                if await self.upload(item):
                    stored += 1
        return stored

    async def upload(self, item: Pending) -> bool:
        """Sends one artifact from where the orchestrator is; True once it is stored.

        Raises for transport failures (the caller retries later)."""
        metadata = await self._auth.metadata()
        key = artifacts_pb2.GetUploadOffsetRequest(
            job_id=item.job_id, attempt=item.attempt, artifact_id=item.artifact.artifact_id
        )
        try:
            where = await self._stub.GetUploadOffset(key, metadata=metadata, timeout=RPC_TIMEOUT_S)
            if not where.stored:
                where = await self._send(item, where.offset, metadata)
        except grpc.aio.AioRpcError as exc:
            return await self._failed(item, exc)
        if where.stored:
            self._corrupt.pop(item.artifact.artifact_id, None)
            await asyncio.to_thread(self.spool.done, item)
            self.stored += 1
            return True
        # All of the file went and it is still short of its size: the local copy is bad.
        await self._corrupted(item)
        return False

    async def _send(
        self, item: Pending, offset: int, metadata: tuple[tuple[str, str], ...]
    ) -> artifacts_pb2.UploadArtifactResponse:
        header = artifacts_pb2.UploadArtifactHeader(
            job_id=item.job_id,
            attempt=item.attempt,
            artifact_id=item.artifact.artifact_id,
            offset=offset,
        )
        source = await asyncio.to_thread(item.path.open, "rb")
        try:
            await asyncio.to_thread(source.seek, offset)
            response: artifacts_pb2.UploadArtifactResponse = await self._stub.UploadArtifact(
                self._requests(header, source), metadata=metadata
            )
        finally:
            source.close()
        return response

    async def _requests(
        self, header: artifacts_pb2.UploadArtifactHeader, source: BinaryIO
    ) -> AsyncIterator[artifacts_pb2.UploadArtifactRequest]:
        yield artifacts_pb2.UploadArtifactRequest(header=header)
        # The next chunk is read while this one goes out; the read in flight is awaited
        # before the caller closes the file.
        loop = asyncio.get_running_loop()
        ahead = loop.run_in_executor(None, source.read, self._chunk)
        try:
            while block := await ahead:
                ahead = loop.run_in_executor(None, source.read, self._chunk)
                yield artifacts_pb2.UploadArtifactRequest(data=block)
        finally:
            if not ahead.done():
                await asyncio.wait([ahead])

    async def _failed(self, item: Pending, exc: grpc.aio.AioRpcError) -> bool:
        code = exc.code()
        artifact_id = item.artifact.artifact_id
        if code == grpc.StatusCode.NOT_FOUND:
            # Not expected (a stale attempt, a result the orchestrator did not keep).
            log.info("artifact %s of job %s not wanted; dropped", artifact_id, item.job_id)
            await asyncio.to_thread(self.spool.done, item)
            return False
        if code == grpc.StatusCode.DATA_LOSS:
            await self._corrupted(item)
            return False
        if code == grpc.StatusCode.UNAUTHENTICATED:
            self._auth.invalidate()
        raise exc

    async def _corrupted(self, item: Pending) -> None:
        artifact_id = item.artifact.artifact_id
        count = self._corrupt.get(artifact_id, 0) + 1
        self._corrupt[artifact_id] = count
        if count >= MAX_CORRUPT:
            log.error(
                "artifact %s of job %s refused as corrupt %d times; dropped",
                artifact_id,
                item.job_id,
                count,
            )
            self._corrupt.pop(artifact_id, None)
            await asyncio.to_thread(self.spool.done, item)
            return
        log.warning("artifact %s: the orchestrator refused its checksum; resending", artifact_id)
        self.wake()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details() or ''}".rstrip(": ")
    return f"{type(exc).__name__}: {exc}"
