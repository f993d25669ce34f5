"""The node's ArtifactUploader against the orchestrator's ArtifactUploadService, over a
real gRPC port, with the real blob store and database (SPEC §7.11): a whole upload, a
resumed one, a corrupt one, another node's, content stored already, and a set whose
result is not acknowledged yet."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cynode.controlplane.v1 import artifacts_pb2, artifacts_pb2_grpc
from cynode.jobs.v1 import job_pb2
from cynode.node.artifacts import ArtifactSpool, ArtifactUploader
from cynode.node.backoff import Backoff
from cynode.orchestrator.artifacts import catalog
from cynode.orchestrator.artifacts.blobs import FsBlobStore
from cynode.orchestrator.artifacts.records import find_upload, record_sets
from cynode.orchestrator.auth import Principal
from cynode.orchestrator.controlplane.tokens import issue_node_token
from cynode.orchestrator.controlplane.uploads import WRITE_AHEAD, ArtifactUploadServicer, _Writer
from cynode.orchestrator.gateway.tasks import TaskBook
from cynode.orchestrator.simnode.harness import (
    ControlPlaneServer,
    enqueue_jobs,
    make_user,
    settings_for_tests,
)
from cynode.orchestrator.store import session_factory
from cynode.orchestrator.store.models import new_id, utcnow
from cynode.orchestrator.store.tables import ARTIFACTS, JOBS

SETTINGS = settings_for_tests()
NODE = "01NODE00000000000000000000"[:26]


@dataclass
class Report:
    node_id: str
    result: job_pb2.JobResult


@dataclass
class Token:
    node_id: str
    invalidated: int = 0

    async def metadata(self) -> tuple[tuple[str, str], ...]:
        token, _ = issue_node_token(SETTINGS.jwt_secret, self.node_id, "slug", 3600)
        return (("authorization", f"Bearer {token}"),)

    def invalidate(self) -> None:
        self.invalidated += 1


@dataclass
class Unacked:
    keys: set[tuple[str, int]] = field(default_factory=set)

    def has(self, job_id: str, attempt: int) -> bool:
        return (job_id, attempt) in self.keys


@dataclass
class World:
    engine: AsyncEngine
    server: ControlPlaneServer
    blobs: FsBlobStore
    spool: ArtifactSpool
    channel: grpc.aio.Channel
    task_id: str
    job_id: str

    def uploader(self, node_id: str = NODE, unacked: Unacked | None = None) -> ArtifactUploader:
        return ArtifactUploader(
            self.channel,
            Token(node_id),
            self.spool,
            unacked or Unacked(),
            chunk_bytes=64 * 1024,
            backoff=Backoff(0.01, 0.05),
        )

    async def announce(self, files: dict[str, bytes], attempt: int = 1) -> list[job_pb2.Artifact]:
        """A result of NODE announcing `files`, as the ingest records it; the files in
        the node's spool."""
        partial = self.spool.start(self.job_id, attempt)
        found = job_pb2.ArtifactSet()
        for name, data in files.items():
            artifact = job_pb2.Artifact(
                artifact_id=new_id(),
                name=name,
                size_bytes=len(data),
                content_type="application/octet-stream",
                sha256=hashlib.sha256(data).hexdigest(),
            )
            (partial / artifact.artifact_id).write_bytes(data)
            found.artifacts.append(artifact)
        self.spool.finish(partial, self.job_id, attempt, found)
        result = job_pb2.JobResult(job_id=self.job_id, attempt=attempt, artifacts=found)
        async with self.engine.begin() as conn:
            await record_sets(conn, [Report(NODE, result)], {self.job_id: self.task_id}, utcnow())
        return list(found.artifacts)

    async def stored(self, artifact_id: str) -> bool:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(ARTIFACTS.c.stored_at).where(ARTIFACTS.c.id == artifact_id)
                )
            ).first()
        return row is not None and row[0] is not None


@pytest.fixture
async def world(sqlite_engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[World]:
    blobs = FsBlobStore(tmp_path / "blobs")
    server = await ControlPlaneServer(sqlite_engine, SETTINGS, blobs=blobs).start()
    user = await make_user(sqlite_engine)
    [(task_id, job_id)] = await enqueue_jobs(sqlite_engine, user, 1)
    channel = grpc.aio.insecure_channel(server.target)
    yield World(
        sqlite_engine,
        server,
        blobs,
        ArtifactSpool(tmp_path / "spool"),
        channel,
        task_id,
        job_id,
    )
    await channel.close(None)
    await server.stop()


async def test_a_whole_upload_is_stored_checked_and_leaves_the_spool(world: World) -> None:
    data = os.urandom(300_000)
    [artifact] = await world.announce({"out.bin": data})
    uploader = world.uploader()
    assert await uploader.upload_ready() == 1
    assert world.blobs.path(artifact.sha256).read_bytes() == data
    assert await world.stored(artifact.artifact_id)
    assert world.spool.jobs() == []
    assert list((world.blobs.root / "incoming").iterdir()) == []


async def test_an_upload_resumes_where_the_orchestrator_stopped(world: World) -> None:
    data = os.urandom(500_000)
    [artifact] = await world.announce({"big.bin": data})
    # What a killed orchestrator kept: the first 200000 bytes, durable.
    (world.blobs.root / "incoming" / f"{artifact.artifact_id}.part").write_bytes(data[:200_000])
    stub = artifacts_pb2_grpc.ArtifactUploadServiceStub(world.channel)  # type: ignore[no-untyped-call]
    metadata = await Token(NODE).metadata()
    where = await stub.GetUploadOffset(
        artifacts_pb2.GetUploadOffsetRequest(
            job_id=world.job_id, attempt=1, artifact_id=artifact.artifact_id
        ),
        metadata=metadata,
    )
    assert (where.offset, where.stored) == (200_000, False)
    assert await world.uploader().upload_ready() == 1
    assert world.blobs.path(artifact.sha256).read_bytes() == data


async def test_a_corrupt_partial_is_refused_then_sent_again_whole(world: World) -> None:
    data = os.urandom(200_000)
    [artifact] = await world.announce({"x.bin": data})
    (world.blobs.root / "incoming" / f"{artifact.artifact_id}.part").write_bytes(b"\0" * 1000)
    uploader = world.uploader()
    assert await uploader.upload_ready() == 0  # DATA_LOSS: the partial went
    assert not world.blobs.has(artifact.sha256)
    assert not await world.stored(artifact.artifact_id)
    assert await uploader.upload_ready() == 1  # from zero this time
    assert world.blobs.path(artifact.sha256).read_bytes() == data


async def test_another_nodes_artifact_is_not_taken_and_is_dropped(world: World) -> None:
    [artifact] = await world.announce({"a.txt": b"abc"})
    assert await world.uploader(node_id="01OTHERNODE000000000000000").upload_ready() == 0
    assert not world.blobs.has(artifact.sha256)
    assert world.spool.jobs() == []  # not wanted: the node forgets it


async def test_content_stored_already_is_not_sent_again(world: World) -> None:
    [first] = await world.announce({"a.txt": b"same bytes"}, attempt=1)
    assert await world.uploader().upload_ready() == 1
    [second] = await world.announce({"b.txt": b"same bytes"}, attempt=2)
    before = world.blobs.path(first.sha256).stat().st_mtime_ns
    assert await world.uploader().upload_ready() == 1
    assert await world.stored(second.artifact_id)
    assert world.blobs.path(first.sha256).stat().st_mtime_ns == before


async def test_nothing_goes_before_the_result_is_acknowledged(world: World) -> None:
    [artifact] = await world.announce({"a.txt": b"later"})
    waiting = Unacked({(world.job_id, 1)})
    assert await world.uploader(unacked=waiting).upload_ready() == 0
    assert not await world.stored(artifact.artifact_id)
    waiting.keys.clear()
    assert await world.uploader(unacked=waiting).upload_ready() == 1


async def test_bad_streams_are_refused(world: World) -> None:
    [artifact] = await world.announce({"a.txt": b"0123456789"})
    stub = artifacts_pb2_grpc.ArtifactUploadServiceStub(world.channel)  # type: ignore[no-untyped-call]
    metadata = await Token(NODE).metadata()
    header = artifacts_pb2.UploadArtifactHeader(
        job_id=world.job_id, attempt=1, artifact_id=artifact.artifact_id
    )

    async def requests(
        *items: artifacts_pb2.UploadArtifactRequest,
    ) -> AsyncIterator[artifacts_pb2.UploadArtifactRequest]:
        for item in items:
            yield item

    cases = {
        grpc.StatusCode.INVALID_ARGUMENT: [artifacts_pb2.UploadArtifactRequest(data=b"x")],
        grpc.StatusCode.OUT_OF_RANGE: [
            artifacts_pb2.UploadArtifactRequest(
                header=artifacts_pb2.UploadArtifactHeader(
                    job_id=world.job_id, attempt=1, artifact_id=artifact.artifact_id, offset=5
                )
            )
        ],
        grpc.StatusCode.DATA_LOSS: [
            artifacts_pb2.UploadArtifactRequest(header=header),
            artifacts_pb2.UploadArtifactRequest(data=b"0123456789abc"),
        ],
    }
    for code, items in cases.items():
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.UploadArtifact(requests(*items), metadata=metadata)
        assert caught.value.code() == code, code
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.UploadArtifact(requests(artifacts_pb2.UploadArtifactRequest(header=header)))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # A short stream answers where it got to; the next one carries on from there.
    short = await stub.UploadArtifact(
        requests(
            artifacts_pb2.UploadArtifactRequest(header=header),
            artifacts_pb2.UploadArtifactRequest(data=b"01234"),
        ),
        metadata=metadata,
    )
    assert (short.offset, short.stored) == (5, False)
    rest = artifacts_pb2.UploadArtifactHeader(
        job_id=world.job_id, attempt=1, artifact_id=artifact.artifact_id, offset=5
    )
    done = await stub.UploadArtifact(
        requests(
            artifacts_pb2.UploadArtifactRequest(header=rest),
            artifacts_pb2.UploadArtifactRequest(data=b"56789"),
        ),
        metadata=metadata,
    )
    assert (done.offset, done.stored) == (10, True)
    assert world.blobs.path(artifact.sha256).read_bytes() == b"0123456789"


async def test_the_run_loop_retries_until_the_orchestrator_is_back(world: World) -> None:
    data = os.urandom(50_000)
    [artifact] = await world.announce({"later.bin": data})
    await world.server.stop()
    uploader = world.uploader()
    runner = asyncio.create_task(uploader.run())
    try:
        uploader.wake()
        await asyncio.sleep(0.3)  # a few failed tries against the closed port
        assert uploader.stored == 0
        await world.server.start()  # the same port again
        deadline = asyncio.get_running_loop().time() + 30
        while uploader.stored == 0:
            assert asyncio.get_running_loop().time() < deadline, "never uploaded after restart"
            await asyncio.sleep(0.05)
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    assert world.blobs.path(artifact.sha256).read_bytes() == data


async def test_a_local_copy_that_never_matches_is_dropped_after_three_refusals(
    world: World,
) -> None:
    [bad, short] = await world.announce({"bad.bin": b"x" * 1000, "short.bin": b"y" * 1000})
    spool_dir = world.spool.path_for(world.job_id, 1)
    (spool_dir / bad.artifact_id).write_bytes(b"z" * 1000)  # same size, other bytes
    (spool_dir / short.artifact_id).write_bytes(b"y" * 10)  # cut short on disk
    uploader = world.uploader()
    for _ in range(3):
        assert await uploader.upload_ready() == 0
    assert world.spool.jobs() == []
    assert not world.blobs.has(bad.sha256) and not world.blobs.has(short.sha256)


async def test_a_refused_token_is_dropped_so_the_node_registers_again(world: World) -> None:
    await world.announce({"a.txt": b"abc"})

    class Refused(Token):
        async def metadata(self) -> tuple[tuple[str, str], ...]:
            return (("authorization", "Bearer not-a-token"),)

    token = Refused(NODE)
    uploader = ArtifactUploader(world.channel, token, world.spool, Unacked())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await uploader.upload_ready()
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert token.invalidated == 1 and len(world.spool.jobs()) == 1


async def test_two_uploads_of_one_artifact_take_turns(world: World) -> None:
    data = os.urandom(3_000_000)
    [artifact] = await world.announce({"twice.bin": data})
    stub = artifacts_pb2_grpc.ArtifactUploadServiceStub(world.channel)  # type: ignore[no-untyped-call]
    metadata = await Token(NODE).metadata()
    header = artifacts_pb2.UploadArtifactHeader(
        job_id=world.job_id, attempt=1, artifact_id=artifact.artifact_id
    )

    async def whole() -> AsyncIterator[artifacts_pb2.UploadArtifactRequest]:
        yield artifacts_pb2.UploadArtifactRequest(header=header)
        for start in range(0, len(data), 100_000):
            await asyncio.sleep(0)
            yield artifacts_pb2.UploadArtifactRequest(data=data[start : start + 100_000])

    answers = await asyncio.gather(
        *(stub.UploadArtifact(whole(), metadata=metadata) for _ in range(3)),
        return_exceptions=True,
    )
    # The first stores it; the others find it stored (or, started at 0 after it was
    # stored, are told so without writing).
    assert any(isinstance(a, artifacts_pb2.UploadArtifactResponse) and a.stored for a in answers), (
        answers
    )
    assert world.blobs.path(artifact.sha256).read_bytes() == data
    assert world.server.cp.upload_servicer is not None
    assert world.server.cp.upload_servicer._locks == {}


async def test_a_failed_write_stops_the_upload_with_no_bytes_past_the_gap(
    tmp_path: Path,
) -> None:
    """The orchestrator writes chunks behind the stream (_Writer): once a write fails,
    the chunks queued after it are not written (a `.part` with a hole would resume
    from the wrong offset), and the failure reaches the call."""
    blobs = FsBlobStore(tmp_path)
    upload = blobs.resume("KEY", 0)
    writer = _Writer(upload, hashlib.sha256())
    await writer.put(b"a" * 1000)
    await writer.finish()
    assert blobs.partial_size("KEY") == 1000
    writer = _Writer(upload, None)
    upload.close()  # every write from here fails (a closed descriptor, like EIO/ENOSPC)
    with pytest.raises(OSError):
        for _ in range(WRITE_AHEAD + 1):
            await writer.put(b"b" * 1000)
    with pytest.raises(OSError):
        await writer.finish()
    assert blobs.partial_size("KEY") == 1000


async def test_a_listing_that_waits_is_woken_by_the_seal_not_by_a_poll(world: World) -> None:
    """GET …/artifacts?wait_seconds (SPEC §2.11): the upload's seal publishes the task's
    topic on the bus the gateway's listings wait on. The recheck is set far past the
    test's deadline, so only that wake can end the wait in time."""
    data = os.urandom(200_000)
    [artifact] = await world.announce({"wait.bin": data})
    async with world.engine.begin() as conn:
        await conn.execute(
            JOBS.update()
            .where(JOBS.c.id == world.job_id)
            .values(status="completed", attempt=1, node_id=NODE)
        )
    book = TaskBook(session_factory(world.engine), world.server.bus)
    admin = Principal(user_id="admin", handle="admin", is_admin=True)
    loop = asyncio.get_running_loop()
    started = loop.time()
    waiting = asyncio.create_task(
        catalog.wait_complete(book, admin, world.task_id, 10, recheck=600)
    )
    await asyncio.sleep(0.2)
    assert not waiting.done()
    assert await world.uploader().upload_ready() == 1
    found = await asyncio.wait_for(waiting, 8)
    assert found.complete and [a.id for a in found.artifacts] == [artifact.artifact_id]
    assert loop.time() - started < 8
    # Complete already: answered at once, however long the caller would wait.
    again = await asyncio.wait_for(catalog.wait_complete(book, admin, world.task_id, 10), 5)
    assert again.complete


async def test_the_seal_names_its_tasks_inside_the_transaction(
    sqlite_engine: AsyncEngine, tmp_path: Path
) -> None:
    """The other replicas' listings are woken by a NOTIFY sent in the transaction that
    marks the rows stored (`in_tx`), as the ingest does for results; this replica's
    by the bus after it."""
    blobs = FsBlobStore(tmp_path / "blobs")
    seen: list[tuple[bool, set[str]]] = []
    after: list[list[str]] = []

    async def in_tx(conn: AsyncConnection, tasks: set[str]) -> None:
        seen.append((conn.in_transaction(), tasks))

    servicer = ArtifactUploadServicer(
        sqlite_engine, blobs, SETTINGS.jwt_secret, after.append, in_tx
    )
    user = await make_user(sqlite_engine)
    [(task_id, job_id)] = await enqueue_jobs(sqlite_engine, user, 1)
    data = os.urandom(1000)
    artifact = job_pb2.Artifact(
        artifact_id=new_id(),
        name="n.bin",
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    result = job_pb2.JobResult(
        job_id=job_id, attempt=1, artifacts=job_pb2.ArtifactSet(artifacts=[artifact])
    )
    async with sqlite_engine.begin() as conn:
        await record_sets(conn, [Report(NODE, result)], {job_id: task_id}, utcnow())
    async with sqlite_engine.connect() as conn:
        target = await find_upload(conn, NODE, job_id, 1, artifact.artifact_id)
    assert target is not None
    assert not await servicer._already_stored(target)  # no blob yet: nothing named
    assert seen == [] and after == []
    # The blob is there (another job's upload made it): recorded as a seal records it.
    upload = blobs.resume("KEY", 0)
    upload.write(data)
    upload.close()
    blobs.seal("KEY", artifact.sha256)
    assert await servicer._already_stored(target)
    assert seen == [(True, {task_id})] and after == [[task_id]]
