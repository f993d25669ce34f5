"""Everything nodes send up a dispatch stream, written in batches.

Streams hand events to one Ingest; its writer drains whatever has queued up and applies
it in one transaction, in arrival order (job started before output before result), then
sends the ResultAcks and wakes task watchers, handing each watcher of a task that ended
what the commit left it at (`lifecycle.Ended`), so the terminal event needs no read.
Many streams' results thus share a commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cynode.jobs.v1 import job_pb2
from cynode.orchestrator import lifecycle
from cynode.orchestrator.artifacts.records import record_sets
from cynode.orchestrator.controlplane.held import HeldConnection
from cynode.orchestrator.store.models import utcnow
from cynode.orchestrator.store.tables import (
    CHUNKS,
    NODES,
    any_id,
    chunked,
    insert_ignoring_duplicates,
)

log = logging.getLogger(__name__)


@dataclass
class Started:
    node_id: str
    job_id: str
    attempt: int
    at: datetime


@dataclass
class Chunk:
    node_id: str
    job_id: str
    attempt: int
    stream: str
    offset: int
    data: bytes


@dataclass
class Result:
    node_id: str
    result: job_pb2.JobResult
    # Called after the commit that stored (or found) the result: sends the ResultAck.
    on_stored: Callable[[], None]


@dataclass
class Beat:
    node_id: str
    running: Sequence[tuple[str, int]]
    at: datetime


Event = Started | Chunk | Result | Beat


# Built once: a statement object memoizes its cache key, so reusing it saves both the
# construction and the cache-key walk that each batch would otherwise repeat.
_BEAT_NODES = {
    pg: NODES.update().where(any_id(NODES.c.id, pg)).values(last_heartbeat_at=sa.bindparam("b_now"))
    for pg in (True, False)
}


class Ingest:
    def __init__(
        self,
        engine: AsyncEngine,
        lease_seconds: int,
        on_tasks_changed: Callable[[AsyncConnection, set[str]], Any],
        after_commit: Callable[[set[str], Mapping[str, lifecycle.Ended]], None],
        max_batch: int = 2000,
    ) -> None:
        self._engine = engine
        self._held = HeldConnection(engine)
        self._pg = engine.dialect.name == "postgresql"
        self._lease = timedelta(seconds=lease_seconds)
        # Runs inside the transaction (e.g. pg_notify), then after it (bus publish, with
        # the tasks that ended in it).
        self._in_tx = on_tasks_changed
        self._after_commit = after_commit
        self._max_batch = max_batch
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def put(self, event: Event) -> None:
        self._queue.put_nowait(event)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="controlplane-ingest")

    async def stop(self) -> None:
        """Writes what is still queued, then ends the writer."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while not self._queue.empty():
            await self._write(self._drain([]))
        await self._held.close()

    def _drain(self, batch: list[Event]) -> list[Event]:
        while len(batch) < self._max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            await self._write(self._drain([first]))

    async def _write(self, batch: list[Event]) -> None:
        try:
            await self.apply(batch)
        except Exception:
            if len(batch) == 1:
                log.exception("dropping an event the store refused")
                return
            # One bad event must not hold back the rest: retry one by one.
            log.warning("batch of %d failed; retrying singly", len(batch), exc_info=True)
            for event in batch:
                await self._write([event])

    async def apply(self, batch: Sequence[Event]) -> None:
        touched: set[str] = set()
        async with self._held.begin() as conn:
            ids = {e.job_id for e in batch if not isinstance(e, (Result, Beat))}
            ids |= {e.result.job_id for e in batch if isinstance(e, Result)}
            ids |= {job for e in batch if isinstance(e, Beat) for job, _ in e.running}
            jobs, attempts = await lifecycle.load_jobs(conn, self._pg, ids)
            starts = [e for e in batch if isinstance(e, Started)]
            chunks = [e for e in batch if isinstance(e, Chunk)]
            results = [e for e in batch if isinstance(e, Result)]
            beats = [e for e in batch if isinstance(e, Beat)]
            # Planned before anything is written, so that a job that both started and
            # finished within this batch is written once (see lifecycle.Starts).
            started = lifecycle.plan_started(starts, jobs, touched)
            finished = lifecycle.plan_results(results, jobs, attempts, touched, started)
            await started.run(conn)
            if chunks:
                await self._apply_chunks(conn, chunks, jobs, touched)
            if beats:
                await self._apply_beats(conn, beats, jobs)
            await finished.run(conn)
            if results:
                # What each result announced from /workspace/out/; the bytes follow.
                tasks_by_job = {job_id: job.task_id for job_id, job in jobs.items()}
                await record_sets(conn, results, tasks_by_job, utcnow())
            if touched:
                await self._in_tx(conn, touched)
        for event in results:
            event.on_stored()
        if touched:
            self._after_commit(touched, finished.ended)

    async def _apply_chunks(
        self,
        conn: AsyncConnection,
        chunks: list[Chunk],
        jobs: dict[str, lifecycle.JobRow],
        touched: set[str],
    ) -> None:
        now = utcnow()
        rows = []
        for ev in chunks:
            job = jobs.get(ev.job_id)
            if job is None or ev.stream not in ("stdout", "stderr"):
                continue
            rows.append(
                {
                    "job_id": ev.job_id,
                    "attempt": ev.attempt,
                    "stream": ev.stream,
                    "offset": ev.offset,
                    "data": ev.data,
                    "created_at": now,
                }
            )
            touched.add(job.task_id)
        if rows:
            await conn.execute(insert_ignoring_duplicates(conn.dialect.name, CHUNKS), rows)

    async def _apply_beats(
        self, conn: AsyncConnection, beats: list[Beat], jobs: dict[str, lifecycle.JobRow]
    ) -> None:
        latest: dict[str, datetime] = {}
        renew: list[tuple[str, int, datetime]] = []
        for ev in beats:
            latest[ev.node_id] = max(ev.at, latest.get(ev.node_id, ev.at))
            for job_id, attempt in ev.running:
                job = jobs.get(job_id)
                if job and job.node_id == ev.node_id and job.attempt == attempt:
                    renew.append((job_id, attempt, ev.at + self._lease))
        now = utcnow()
        nodes = sorted(latest)
        for part in chunked(nodes):
            await conn.execute(_BEAT_NODES[self._pg], {"ids": list(part), "b_now": now})
        await lifecycle.renew(conn, renew)
