"""Artifact retention: the TTL sweep and blob removal once no row names a blob."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import grpc
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from cynode.controlplane.v1 import artifacts_pb2, artifacts_pb2_grpc
from cynode.jobs.v1 import job_pb2
from cynode.orchestrator.artifacts.blobs import FsBlobStore
from cynode.orchestrator.artifacts.records import record_sets
from cynode.orchestrator.artifacts.retention import Sweeper, expire, remove_blobs
from cynode.orchestrator.controlplane.tokens import issue_node_token
from cynode.orchestrator.simnode.harness import (
    ControlPlaneServer,
    enqueue_jobs,
    make_user,
    settings_for_tests,
)
from cynode.orchestrator.store.models import new_id, utcnow
from cynode.orchestrator.store.tables import ARTIFACT_SETS, ARTIFACTS


@dataclass
class Report:
    node_id: str
    result: job_pb2.JobResult


def _store(blobs: FsBlobStore, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    key = new_id()
    upload = blobs.resume(key, 0)
    upload.write(data)
    upload.close()
    blobs.seal(key, sha)
    return sha


async def _announce(
    engine: AsyncEngine, task_id: str, job_id: str, attempt: int, data: bytes
) -> None:
    artifact = job_pb2.Artifact(
        artifact_id=new_id(),
        name=f"f{attempt}",
        size_bytes=len(data),
        content_type="text/plain",
        sha256=hashlib.sha256(data).hexdigest(),
    )
    result = job_pb2.JobResult(
        job_id=job_id, attempt=attempt, artifacts=job_pb2.ArtifactSet(artifacts=[artifact])
    )
    async with engine.begin() as conn:
        await record_sets(conn, [Report("N", result)], {job_id: task_id}, utcnow())


async def test_expire_removes_old_sets_and_only_blobs_nobody_names(
    sqlite_engine: AsyncEngine, tmp_path: Path
) -> None:
    blobs = FsBlobStore(tmp_path)
    user = await make_user(sqlite_engine)
    [(task_id, job_id)] = await enqueue_jobs(sqlite_engine, user, 1)
    shared, own = b"shared bytes", os.urandom(100)
    await _announce(sqlite_engine, task_id, job_id, 1, own)
    await _announce(sqlite_engine, task_id, job_id, 2, shared)
    sha_own, sha_shared = _store(blobs, own), _store(blobs, shared)
    stale = blobs.resume("STALE", 0)
    stale.write(b"abandoned")
    stale.close()
    old = time.time() - 2 * 86400
    os.utime(blobs.root / "incoming" / "STALE.part", (old, old))
    # Attempt 1's set is old; attempt 2's (the same content as a newer one) is not.
    async with sqlite_engine.begin() as conn:
        await conn.execute(
            ARTIFACT_SETS.update()
            .where(ARTIFACT_SETS.c.attempt == 1)
            .values(created_at=utcnow() - timedelta(days=2))
        )
    assert await expire(sqlite_engine, blobs, timedelta(days=1)) == 1
    assert not blobs.has(sha_own) and blobs.has(sha_shared)
    assert blobs.partial_size("STALE") == 0
    async with sqlite_engine.connect() as conn:
        names = [r[0] for r in await conn.execute(sa.select(ARTIFACTS.c.name))]
        old_set = (
            await conn.execute(
                sa.select(ARTIFACT_SETS.c.count, ARTIFACT_SETS.c.truncated_reason).where(
                    ARTIFACT_SETS.c.attempt == 1
                )
            )
        ).one()
    assert names == ["f2"] and tuple(old_set) == (0, "expired")
    assert await expire(sqlite_engine, blobs, timedelta(days=1)) == 0
    assert await remove_blobs(sqlite_engine, blobs, {sha_shared}) == 0  # still named


async def test_the_sweeper_runs_in_the_background(
    sqlite_engine: AsyncEngine, tmp_path: Path
) -> None:
    blobs = FsBlobStore(tmp_path)
    user = await make_user(sqlite_engine)
    [(task_id, job_id)] = await enqueue_jobs(sqlite_engine, user, 1)
    data = b"short-lived"
    await _announce(sqlite_engine, task_id, job_id, 1, data)
    sha = _store(blobs, data)
    sweeper = Sweeper(sqlite_engine, blobs, ttl_seconds=1, every=0.1)
    sweeper.start()
    try:
        deadline = time.monotonic() + 20
        while blobs.has(sha):
            assert time.monotonic() < deadline, "the sweep never removed the blob"
            await asyncio.sleep(0.1)
    finally:
        await sweeper.stop()
    await sweeper.stop()  # twice is harmless


class GatedBlobs(FsBlobStore):
    """Holds the deletion of one blob until released: the sweep's window between
    judging the blob unreferenced and deleting it, held open."""

    def __init__(self, root: Path, gated: str) -> None:
        super().__init__(root)
        self.gated = gated
        self.entered = threading.Event()
        self.release = threading.Event()

    def delete(self, sha256: str) -> None:
        if sha256 == self.gated:
            self.entered.set()
            assert self.release.wait(30), "the test never released the deletion"
        super().delete(sha256)


async def test_a_blob_the_sweep_removes_is_never_left_under_a_row_marked_stored(
    db_engine: AsyncEngine, tmp_path: Path
) -> None:
    """The race of SPEC §2.12: the sweep finds no row naming a blob; meanwhile another
    job's result names the same content and its node asks where to upload; the sweep
    then deletes the blob. The upload must not have been told "stored" on a blob that
    goes: the look at the blob and the deletion are judged under one lock."""
    data = os.urandom(4096)
    sha = hashlib.sha256(data).hexdigest()
    blobs = GatedBlobs(tmp_path, sha)
    settings = settings_for_tests(artifacts_ttl_seconds=0)
    server = await ControlPlaneServer(db_engine, settings, blobs=blobs).start()
    channel = grpc.aio.insecure_channel(server.target)
    try:
        user = await make_user(db_engine)
        [(task_id, job_id)] = await enqueue_jobs(db_engine, user, 1)
        await _announce(db_engine, task_id, job_id, 1, data)
        assert _store(blobs, data) == sha
        async with db_engine.begin() as conn:
            await conn.execute(
                ARTIFACT_SETS.update()
                .where(ARTIFACT_SETS.c.job_id == job_id)
                .values(created_at=utcnow() - timedelta(days=2))
            )
        sweep = asyncio.create_task(expire(db_engine, blobs, timedelta(days=1)))
        assert await asyncio.to_thread(blobs.entered.wait, 30), "the sweep never got there"

        async def upload_of_the_same_content() -> tuple[str, bool]:
            await _announce(db_engine, task_id, job_id, 2, data)
            async with db_engine.connect() as conn:
                artifact_id = (
                    await conn.execute(
                        sa.select(ARTIFACTS.c.id).where(
                            ARTIFACTS.c.job_id == job_id, ARTIFACTS.c.attempt == 2
                        )
                    )
                ).scalar_one()
            token, _ = issue_node_token(settings.jwt_secret, "N", "slug", 3600)
            stub = artifacts_pb2_grpc.ArtifactUploadServiceStub(channel)  # type: ignore[no-untyped-call]
            answer = await stub.GetUploadOffset(
                artifacts_pb2.GetUploadOffsetRequest(
                    job_id=job_id, attempt=2, artifact_id=artifact_id
                ),
                metadata=(("authorization", f"Bearer {token}"),),
            )
            return artifact_id, answer.stored

        racer = asyncio.create_task(upload_of_the_same_content())
        # Old code: the upload is told "stored" here, before the deletion goes on.
        await asyncio.wait({racer}, timeout=1.0)
        blobs.release.set()
        await sweep
        artifact_id, told_stored = await racer
        async with db_engine.connect() as conn:
            stored_at = (
                await conn.execute(
                    sa.select(ARTIFACTS.c.stored_at).where(ARTIFACTS.c.id == artifact_id)
                )
            ).scalar_one()
        assert not blobs.has(sha)
        assert stored_at is None and not told_stored, "listed as stored without its blob"
    finally:
        blobs.release.set()
        await channel.close(None)
        await server.stop()
