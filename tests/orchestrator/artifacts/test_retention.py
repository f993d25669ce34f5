"""Artifact retention: the TTL sweep and blob removal once no row names a blob."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from cynode.jobs.v1 import job_pb2
from cynode.orchestrator.artifacts.blobs import FsBlobStore
from cynode.orchestrator.artifacts.records import record_sets
from cynode.orchestrator.artifacts.retention import Sweeper, expire, remove_blobs
from cynode.orchestrator.simnode.harness import enqueue_jobs, make_user
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
