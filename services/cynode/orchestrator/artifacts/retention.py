"""Retention of artifacts (SPEC §2.12): blobs go when no artifact row names them any
more (a deleted task, an expired set), and a background sweep expires the artifacts of
tasks that ended longer than the TTL ago, with uploads abandoned as long."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from cynode.orchestrator.artifacts.blobs import FsBlobStore
from cynode.orchestrator.artifacts.records import lock_content, unreferenced
from cynode.orchestrator.store.models import utcnow
from cynode.orchestrator.store.tables import ARTIFACT_SETS, ARTIFACTS

log = logging.getLogger(__name__)


async def _remove_if_unreferenced(conn: AsyncConnection, blobs: FsBlobStore, sha: str) -> bool:
    """Deletes the blob `sha` if no row names it, judged and done under its lock (so an
    upload cannot mark a row stored on it in between): whether it went."""
    await lock_content(conn, sha)
    if not await unreferenced(conn, {sha}):
        return False
    await asyncio.to_thread(blobs.delete, sha)
    return True


async def remove_blobs(
    engine: AsyncEngine, blobs: FsBlobStore, sha256s: frozenset[str] | set[str]
) -> int:
    """Deletes the blobs of `sha256s` that no row names; how many went. One short
    transaction per blob, in a fixed order: the lock is held only while one is judged."""
    gone = 0
    for sha in sorted(sha256s):
        async with engine.begin() as conn:
            gone += await _remove_if_unreferenced(conn, blobs, sha)
    return gone


async def remove_unreferenced(
    factory: async_sessionmaker[AsyncSession], blobs: FsBlobStore, sha256s: frozenset[str]
) -> int:
    """`remove_blobs` through the gateway's sessions (DeleteTask)."""
    gone = 0
    for sha in sorted(sha256s):
        async with factory() as session, session.begin():
            gone += await _remove_if_unreferenced(await session.connection(), blobs, sha)
    return gone


async def expire(
    engine: AsyncEngine, blobs: FsBlobStore, ttl: timedelta, now: datetime | None = None
) -> int:
    """Removes the artifacts (rows and then blobs) of sets recorded before now - ttl,
    and `.part` files untouched as long; the number of artifacts expired."""
    cutoff = (now or utcnow()) - ttl
    async with engine.begin() as conn:
        old = sa.select(ARTIFACT_SETS.c.job_id, ARTIFACT_SETS.c.attempt).where(
            ARTIFACT_SETS.c.created_at < cutoff
        )
        keys = [(r[0], r[1]) for r in await conn.execute(old)]
        shas: set[str] = set()
        count = 0
        for job_id, attempt in keys:
            match = sa.and_(ARTIFACTS.c.job_id == job_id, ARTIFACTS.c.attempt == attempt)
            shas |= {r[0] for r in await conn.execute(sa.select(ARTIFACTS.c.sha256).where(match))}
            count += (await conn.execute(ARTIFACTS.delete().where(match))).rowcount
        # The sets stay (with no files), so the listing says what there was: nothing left.
        await conn.execute(
            ARTIFACT_SETS.update()
            .where(ARTIFACT_SETS.c.created_at < cutoff, ARTIFACT_SETS.c.count > 0)
            .values(count=0, truncated=True, truncated_reason="expired")
        )
    await remove_blobs(engine, blobs, shas)
    await asyncio.to_thread(blobs.remove_stale_uploads, time.time() - ttl.total_seconds())
    return count


class Sweeper:
    """Runs `expire` every `every` seconds until stopped (on every replica: each run is
    idempotent, and a blob goes only once no row names it)."""

    def __init__(
        self, engine: AsyncEngine, blobs: FsBlobStore, ttl_seconds: int, every: float
    ) -> None:
        self._engine = engine
        self._blobs = blobs
        self._ttl = timedelta(seconds=ttl_seconds)
        self._every = every
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="artifact-sweep")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                expired = await expire(self._engine, self._blobs, self._ttl)
                if expired:
                    log.info("artifact sweep: %d artifacts expired", expired)
            except Exception:
                log.warning("artifact sweep failed", exc_info=True)
            await asyncio.sleep(self._every)
