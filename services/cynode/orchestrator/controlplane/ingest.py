"""Everything nodes send up a dispatch stream, written in batches.

Streams hand events to one Ingest; its writer drains whatever has queued up and applies
it in one transaction, in arrival order (job started before output before result), then
sends the ResultAcks and wakes task watchers. Many streams' results thus share a commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cynode.jobs.v1 import job_pb2
from cynode.orchestrator.controlplane.held import HeldConnection
from cynode.orchestrator.controlplane.tables import (
    ASSIGNED,
    ATTEMPTS,
    CHUNKS,
    JOBS,
    LIVE,
    NODES,
    QUEUED,
    RESULT_STATUSES,
    RUNNING,
    TASKS,
    TERMINAL,
    Many,
    any_id,
    chunked,
    insert_ignoring_duplicates,
)
from cynode.orchestrator.store.models import new_id, utcnow

log = logging.getLogger(__name__)

STATUS_NAMES = {
    job_pb2.JOB_STATUS_COMPLETED: "completed",
    job_pb2.JOB_STATUS_FAILED: "failed",
    job_pb2.JOB_STATUS_CANCELED: "canceled",
}


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


@dataclass
class _JobRow:
    id: str
    task_id: str
    attempt: int
    status: str
    node_id: str | None
    ended_at: datetime | None


_RESULT_FIELDS = (
    "status",
    "exit_code",
    "stdout",
    "stderr",
    "stdout_truncated",
    "stderr_truncated",
    "reason",
    "started_at",
    "ended_at",
)

# Built once: a statement object memoizes its cache key, so reusing it saves both the
# construction and the cache-key walk that each batch would otherwise repeat.
# Keyed by "is Postgres": the id-list statements differ by backend (see any_id).
# The jobs with their attempt rows (one row per attempt, or one with NULLs for a job not
# yet dispatched), in one round trip.
_LOAD_JOBS = {
    pg: sa.select(
        JOBS.c.id,
        JOBS.c.task_id,
        JOBS.c.attempt,
        JOBS.c.status,
        JOBS.c.node_id,
        JOBS.c.ended_at,
        ATTEMPTS.c.attempt,
        ATTEMPTS.c.status,
    )
    .select_from(JOBS.outerjoin(ATTEMPTS, ATTEMPTS.c.job_id == JOBS.c.id))
    .where(any_id(JOBS.c.id, pg))
    for pg in (True, False)
}
_START_JOBS = Many(
    JOBS.update()
    .where(JOBS.c.id == sa.bindparam("b_id"), JOBS.c.status == QUEUED)
    .values(status=RUNNING, started_at=sa.bindparam("b_at"), updated_at=sa.bindparam("b_now"))
)
_START_TASKS = Many(
    TASKS.update()
    .where(TASKS.c.id == sa.bindparam("b_id"), TASKS.c.status == QUEUED)
    .values(status=RUNNING, updated_at=sa.bindparam("b_now"))
)
_START_ATTEMPTS = Many(
    ATTEMPTS.update()
    .where(
        ATTEMPTS.c.job_id == sa.bindparam("b_job"),
        ATTEMPTS.c.attempt == sa.bindparam("b_attempt"),
        ATTEMPTS.c.status == ASSIGNED,
    )
    .values(status=RUNNING, started_at=sa.bindparam("b_at"))
)
_BEAT_NODES = {
    pg: NODES.update().where(any_id(NODES.c.id, pg)).values(last_heartbeat_at=sa.bindparam("b_now"))
    for pg in (True, False)
}
_RENEW = Many(
    JOBS.update()
    .where(
        JOBS.c.id == sa.bindparam("b_id"),
        JOBS.c.attempt == sa.bindparam("b_attempt"),
        # Not .in_(LIVE): an expanding IN cannot go into an executemany, and this
        # UPDATE runs once per renewed job.
        sa.or_(*(JOBS.c.status == status for status in LIVE)),
    )
    .values(lease_expires_at=sa.bindparam("b_lease"))
)
_INSERT_ATTEMPTS = ATTEMPTS.insert()
_RESULT_ATTEMPTS = Many(
    ATTEMPTS.update()
    .where(
        ATTEMPTS.c.job_id == sa.bindparam("b_job"),
        ATTEMPTS.c.attempt == sa.bindparam("b_attempt"),
    )
    .values(
        {
            **{k: sa.bindparam(f"b_{k}") for k in _RESULT_FIELDS},
            # A result that carries no start time (a job stopped before it started on
            # a node that says so) keeps the one its JobStarted recorded.
            "started_at": sa.func.coalesce(
                sa.bindparam("b_started_at", type_=ATTEMPTS.c.started_at.type),
                ATTEMPTS.c.started_at,
            ),
        }
    )
)
_RESULT_JOBS = Many(
    JOBS.update()
    .where(JOBS.c.id == sa.bindparam("b_id"))
    .values(
        {
            **{k: sa.bindparam(f"b_{k}") for k in _RESULT_FIELDS if k != "started_at"},
            "status": sa.bindparam("b_status"),
            "updated_at": sa.bindparam("b_now"),
            "started_at": sa.func.coalesce(
                JOBS.c.started_at, sa.bindparam("b_started_at", type_=JOBS.c.started_at.type)
            ),
        }
    )
)
_RESULT_TASKS = Many(
    TASKS.update()
    .where(TASKS.c.id == sa.bindparam("b_id"))
    .values(
        status=sa.bindparam("b_status"),
        reason=sa.bindparam("b_reason"),
        updated_at=sa.bindparam("b_now"),
    )
)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ts(msg: Any, name: str) -> datetime | None:
    """The Timestamp field `name` as an aware UTC datetime (what ToDatetime(UTC) gives,
    in half its time: two of these per result)."""
    if not msg.HasField(name):
        return None
    ts = getattr(msg, name)
    return _EPOCH + timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)


class Ingest:
    def __init__(
        self,
        engine: AsyncEngine,
        lease_seconds: int,
        on_tasks_changed: Callable[[AsyncConnection, set[str]], Any],
        after_commit: Callable[[set[str]], None],
        max_batch: int = 2000,
    ) -> None:
        self._engine = engine
        self._held = HeldConnection(engine)
        self._pg = engine.dialect.name == "postgresql"
        self._lease = timedelta(seconds=lease_seconds)
        # Runs inside the transaction (e.g. pg_notify), then after it (bus publish).
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
            jobs, attempts = await _load_jobs(conn, self._pg, ids)
            starts = [e for e in batch if isinstance(e, Started)]
            chunks = [e for e in batch if isinstance(e, Chunk)]
            results = [e for e in batch if isinstance(e, Result)]
            beats = [e for e in batch if isinstance(e, Beat)]
            # Planned before anything is written, so that a job that both started and
            # finished within this batch is written once (see _Starts).
            started = _plan_started(starts, jobs, touched)
            finished = _plan_results(results, jobs, attempts, touched, started)
            await started.run(conn)
            if chunks:
                await self._apply_chunks(conn, chunks, jobs, touched)
            if beats:
                await self._apply_beats(conn, beats, jobs)
            await finished.run(conn)
            if touched:
                await self._in_tx(conn, touched)
        for event in results:
            event.on_stored()
        if touched:
            self._after_commit(touched)

    async def _apply_chunks(
        self,
        conn: AsyncConnection,
        chunks: list[Chunk],
        jobs: dict[str, _JobRow],
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
        self, conn: AsyncConnection, beats: list[Beat], jobs: dict[str, _JobRow]
    ) -> None:
        latest: dict[str, datetime] = {}
        renew = []
        for ev in beats:
            latest[ev.node_id] = max(ev.at, latest.get(ev.node_id, ev.at))
            for job_id, attempt in ev.running:
                job = jobs.get(job_id)
                if job and job.node_id == ev.node_id and job.attempt == attempt:
                    renew.append(
                        {"b_id": job_id, "b_attempt": attempt, "b_lease": ev.at + self._lease}
                    )
        now = utcnow()
        nodes = sorted(latest)
        for part in chunked(nodes):
            await conn.execute(_BEAT_NODES[self._pg], {"ids": list(part), "b_now": now})
        if renew:
            await _RENEW.run(conn, renew)


@dataclass
class _Starts:
    """The UPDATEs of a batch's JobStarted events, keyed so that results in the same
    batch can take theirs over: within one transaction the running step of a job that
    also finished is never seen by anyone, and writing it costs three row versions."""

    # The events whose job moves to running, each with the task that moves with it, by
    # job id; the events whose attempt row does, by (job, attempt). Rows are made at run().
    jobs: dict[str, tuple[Started, str]] = field(default_factory=dict)
    attempts: dict[tuple[str, int], Started] = field(default_factory=dict)

    async def run(self, conn: AsyncConnection) -> None:
        now = utcnow()
        if self.jobs:
            await _START_JOBS.run(
                conn,
                [{"b_id": j, "b_at": ev.at, "b_now": now} for j, (ev, _) in self.jobs.items()],
            )
            await _START_TASKS.run(
                conn, [{"b_id": task, "b_now": now} for _, task in self.jobs.values()]
            )
        if self.attempts:
            await _START_ATTEMPTS.run(
                conn,
                [
                    {"b_job": job, "b_attempt": attempt, "b_at": ev.at}
                    for (job, attempt), ev in self.attempts.items()
                ],
            )


@dataclass
class _Finishes:
    """The writes of a batch's results."""

    inserts: list[dict[str, Any]] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)

    async def run(self, conn: AsyncConnection) -> None:
        if self.inserts:
            await conn.execute(_INSERT_ATTEMPTS, self.inserts)
        if self.updates:
            await _RESULT_ATTEMPTS.run(conn, self.updates)
        if self.jobs:
            await _RESULT_JOBS.run(conn, self.jobs)
            await _RESULT_TASKS.run(conn, self.tasks)


def _plan_results(
    results: list[Result],
    jobs: dict[str, _JobRow],
    attempts: dict[tuple[str, int], str],
    touched: set[str],
    started: _Starts,
) -> _Finishes:
    out = _Finishes()
    if not results:
        return out
    now = utcnow()
    for ev in results:
        res = ev.result
        job = jobs.get(res.job_id)
        if job is None:
            continue  # unknown job: acknowledged so the node forgets it
        key = (res.job_id, res.attempt)
        known = attempts.get(key)
        if known in RESULT_STATUSES:
            continue  # a replay
        status = STATUS_NAMES.get(res.status, "failed")
        reason = res.reason or (None if status == "completed" else "error")
        ended_at = _ts(res, "ended_at") or now
        # The result's columns as bound parameters (b_<column>), shared by the
        # attempt's and the job's UPDATE.
        bound: dict[str, Any] = {
            "b_status": status,
            "b_exit_code": res.exit_code,
            "b_stdout": res.stdout,
            "b_stderr": res.stderr,
            "b_stdout_truncated": res.stdout_truncated,
            "b_stderr_truncated": res.stderr_truncated,
            "b_reason": reason,
            "b_started_at": _ts(res, "started_at"),
            "b_ended_at": ended_at,
        }
        attempts[key] = status
        # The result sets every column the attempt's start would have (its start time
        # too, when the result itself has none).
        folded = started.attempts.pop(key, None)
        if folded is not None and bound["b_started_at"] is None:
            bound["b_started_at"] = folded.at
        if known is None:
            row = {k[2:]: v for k, v in bound.items()}
            row.update(
                job_id=res.job_id,
                attempt=res.attempt,
                node_id=ev.node_id,
                received_at=now,
                id=new_id(),
            )
            out.inserts.append(row)
        else:
            out.updates.append({**bound, "b_job": res.job_id, "b_attempt": res.attempt})
        touched.add(job.task_id)
        if job.attempt != res.attempt:
            continue  # a stale attempt: recorded, never overwrites
        if job.status == QUEUED and status == "canceled":
            # The copy was stopped because its lease lapsed; the job itself was
            # requeued (same attempt number until it is dispatched again), not canceled.
            continue
        if job.status in TERMINAL and not (job.status == "canceled" and job.ended_at is None):
            continue
        # A canceled job keeps its status but gets the output its container left.
        new_status = "canceled" if job.status == "canceled" else status
        job.status = new_status
        job.ended_at = ended_at
        job_row = {**bound, "b_status": new_status, "b_id": res.job_id, "b_now": now}
        start = started.jobs.pop(res.job_id, None)
        if start is not None:
            # Started in this batch too: its start time goes in with the result
            # (started_at is NULL until then, so coalesce keeps it as the start's
            # UPDATE would have), and the task skips its running step.
            job_row["b_started_at"] = start[0].at
        out.jobs.append(job_row)
        out.tasks.append(
            {"b_id": job.task_id, "b_status": new_status, "b_reason": reason, "b_now": now}
        )
    return out


def _plan_started(starts: list[Started], jobs: dict[str, _JobRow], touched: set[str]) -> _Starts:
    out = _Starts()
    for ev in starts:
        job = jobs.get(ev.job_id)
        if job is None:
            continue
        # A repeated start changes nothing: its UPDATE would find the attempt running.
        out.attempts.setdefault((ev.job_id, ev.attempt), ev)
        if job.attempt == ev.attempt and job.status == QUEUED and job.node_id == ev.node_id:
            job.status = RUNNING
            out.jobs[ev.job_id] = (ev, job.task_id)
            touched.add(job.task_id)
    return out


async def _load_jobs(
    conn: AsyncConnection, pg: bool, ids: set[str]
) -> tuple[dict[str, _JobRow], dict[tuple[str, int], str]]:
    """The jobs by id, and the statuses of their attempt rows by (job, attempt)."""
    jobs: dict[str, _JobRow] = {}
    attempts: dict[tuple[str, int], str] = {}
    for part in chunked(sorted(ids)):
        for r in await conn.execute(_LOAD_JOBS[pg], {"ids": list(part)}):
            if r[0] not in jobs:
                jobs[r[0]] = _JobRow(*r[:6])
            if r[6] is not None:
                attempts[(r[0], r[6])] = r[7]
    return jobs, attempts
