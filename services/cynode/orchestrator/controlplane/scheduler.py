"""The scheduler: queued jobs → connected nodes with credits, leases, requeues, cancels.

One loop per replica. It wakes on the bus `jobs` topic, on NOTIFY from other replicas,
when a node grants credits, and every `sweep_seconds` (expired leases, missed wake-ups).
A round claims up to as many jobs as this replica's nodes have credits, in one
transaction (`FOR UPDATE SKIP LOCKED` on Postgres, so replicas never claim the same
row; on SQLite this loop is the only claimer), stamps node, attempt + 1 and lease, adds
one JobAttempt row per dispatch (unique per job and attempt: a second live copy cannot
be recorded), commits, and only then sends the assignments.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cynode.controlplane.v1 import dispatch_pb2
from cynode.orchestrator.controlplane.held import HeldConnection
from cynode.orchestrator.controlplane.jobspec import TaskFields, build_spec
from cynode.orchestrator.controlplane.notify import Notifier
from cynode.orchestrator.controlplane.sessions import NodeSession, Registry
from cynode.orchestrator.controlplane.settings import ControlPlaneSettings
from cynode.orchestrator.controlplane.tables import (
    ASSIGNED,
    ATTACHMENTS,
    ATTEMPTS,
    JOBS,
    LIVE,
    LOST,
    QUEUED,
    RUNNING,
    TASKS,
    Many,
    any_id,
    chunked,
    insert,
)
from cynode.orchestrator.store.models import new_ids, utcnow

log = logging.getLogger(__name__)

NODE_LOST = "node_lost"


class _Claimed(NamedTuple):
    id: str
    task_id: str
    attempt: int
    needs_inference: bool
    task: TaskFields
    has_files: bool


# Built once: a statement object memoizes its cache key, so reusing it saves both the
# construction and the cache-key walk that each round would otherwise repeat.
_ASSIGN_JOBS = Many(
    JOBS.update()
    .where(JOBS.c.id == sa.bindparam("b_id"), JOBS.c.status == QUEUED)
    .values(
        node_id=sa.bindparam("b_node"),
        attempt=sa.bindparam("b_attempt"),
        lease_expires_at=sa.bindparam("b_lease"),
        updated_at=sa.bindparam("b_now"),
    )
)
_ATTEMPT_COLUMNS = (
    "id",
    "job_id",
    "attempt",
    "node_id",
    "status",
    "received_at",
    "stdout",
    "stderr",
    "stdout_truncated",
    "stderr_truncated",
)
_INSERT_ATTEMPTS = insert(ATTEMPTS, _ATTEMPT_COLUMNS)
# Keyed by "is Postgres": the id-list statements differ by backend (see any_id).
_LOAD_FILES = {
    pg: sa.select(ATTACHMENTS.c.task_id, ATTACHMENTS.c.name, ATTACHMENTS.c.content)
    .where(any_id(ATTACHMENTS.c.task_id, pg))
    .order_by(ATTACHMENTS.c.id)
    for pg in (True, False)
}


def _claim_stmt(inference: bool, pg: bool) -> Any:
    """Queued jobs with their tasks' spec columns, in one statement; on Postgres the job
    rows (only) are locked, skipping rows another replica holds."""
    stmt = (
        sa.select(
            JOBS.c.id,
            JOBS.c.task_id,
            JOBS.c.attempt,
            JOBS.c.needs_inference,
            # TaskFields after its id (the job's task_id), in its order.
            *(TASKS.c[name] for name in TaskFields._fields[1:]),
            # Most tasks have no attachments: the round then skips their query.
            sa.exists().where(ATTACHMENTS.c.task_id == TASKS.c.id).label("has_files"),
        )
        .join(TASKS, TASKS.c.id == JOBS.c.task_id)
        .where(
            JOBS.c.status == QUEUED,
            JOBS.c.node_id.is_(None),
            JOBS.c.cancel_requested.is_(False),
            JOBS.c.needs_inference.is_(inference),
        )
        .order_by(JOBS.c.id)
        .limit(sa.bindparam("limit", type_=sa.Integer))
    )
    if pg:
        stmt = stmt.with_for_update(skip_locked=True, of=JOBS)
    return stmt


_CLAIM = {(inf, pg): _claim_stmt(inf, pg) for inf in (True, False) for pg in (True, False)}


class Scheduler:
    def __init__(
        self,
        engine: AsyncEngine,
        registry: Registry,
        settings: ControlPlaneSettings,
        notifier: Notifier,
        tasks_changed_in_tx: Callable[[AsyncConnection, set[str]], Any],
        tasks_changed: Callable[[set[str]], None],
    ) -> None:
        self._engine = engine
        self._held = HeldConnection(engine)
        self._pg = engine.dialect.name == "postgresql"
        self._registry = registry
        self._settings = settings
        self._notifier = notifier
        self._tasks_in_tx = tasks_changed_in_tx
        self._tasks_changed = tasks_changed
        self._event = asyncio.Event()
        self._cancels_due = True
        self._last_sweep = 0.0
        self._task: asyncio.Task[None] | None = None
        self.assigned_total = 0

    def wake(self, *, cancels: bool = False, sweep: bool = False) -> None:
        self._cancels_due = self._cancels_due or cancels
        if sweep:
            self._last_sweep = 0.0
        self._event.set()

    async def hold_leases(self) -> int:
        """Gives every live lease at least two leases from now. Run at start-up, before
        the control-plane port opens: no node could renew while this process was down,
        so a lease that ran out then, or runs out before its node (reconnecting with
        backoff) is back, would otherwise send the job to a second node while the first
        still runs it. A node that is back lists what it holds; what it does not hold is
        expired at once on its Hello. With several replicas a starting one holds the
        others' leases too, so a node lost just then is noticed up to two leases later."""
        floor = utcnow() + timedelta(seconds=2 * self._settings.lease_seconds)
        async with self._engine.begin() as conn:
            held = await conn.execute(
                JOBS.update()
                .where(
                    JOBS.c.status.in_(LIVE),
                    JOBS.c.node_id.is_not(None),
                    JOBS.c.lease_expires_at < floor,
                )
                .values(lease_expires_at=floor)
            )
        if held.rowcount:
            log.info(
                "start-up: %d running job(s) keep their lease for %d s while nodes reconnect",
                held.rowcount,
                2 * self._settings.lease_seconds,
            )
        return int(held.rowcount)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="controlplane-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._held.close()

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._event.wait(), timeout=self._settings.sweep_seconds)
            except TimeoutError:
                self._cancels_due = True
            self._event.clear()
            try:
                await self.round()
            except Exception:
                log.exception("scheduler round failed; retrying")
                await asyncio.sleep(0.5)
                self._event.set()

    async def round(self) -> None:
        if time.monotonic() - self._last_sweep >= self._settings.sweep_seconds:
            self._last_sweep = time.monotonic()
            await self.expire_leases()
        if self._cancels_due:
            self._cancels_due = False
            await self.deliver_cancels()
        while await self.assign() >= self._settings.claim_batch:
            pass

    # -- assignment -------------------------------------------------------------------

    async def assign(self) -> int:
        """One claim-and-send pass; returns how many jobs it dispatched."""
        sessions = [s for s in self._registry if s.credits > 0 and not s.closed]
        total = min(sum(s.credits for s in sessions), self._settings.claim_batch)
        if total <= 0:
            return 0
        inf_credits = min(sum(s.credits for s in sessions if s.inference), total)
        sends: list[tuple[NodeSession, dispatch_pb2.ConnectResponse]] = []
        now = utcnow()
        lease = now + timedelta(seconds=self._settings.lease_seconds)
        plan: list[tuple[_Claimed, NodeSession]] = []
        try:
            async with self._held.begin() as conn:
                claimed = await self._claim(conn, True, inf_credits) if inf_credits else []
                claimed += await self._claim(conn, False, total - len(claimed))
                if not claimed:
                    return 0
                plan = _plan(claimed, sessions)
                await self._dispatch(conn, plan, now, lease, sends)
        except BaseException:
            for row, session in plan:
                session.credits += 1  # the claim rolled back: the slots are free again
                session.outstanding.discard((row.id, row.attempt + 1))
            raise
        for session, msg in sends:
            session.send(msg)
        self.assigned_total += len(sends)
        return len(sends)

    async def _dispatch(
        self,
        conn: AsyncConnection,
        plan: list[tuple[_Claimed, NodeSession]],
        now: datetime,
        lease: datetime,
        sends: list[tuple[NodeSession, dispatch_pb2.ConnectResponse]],
    ) -> None:
        files = await _load_files(conn, self._pg, {row.task_id for row, _ in plan if row.has_files})
        job_rows, attempt_rows = [], []
        lease_ts = Timestamp()
        lease_ts.FromDatetime(lease)
        attempt_ids = new_ids(len(plan))
        for (row, session), attempt_id in zip(plan, attempt_ids, strict=True):
            attempt = row.attempt + 1
            job_rows.append(
                {
                    "b_id": row.id,
                    "b_node": session.node_id,
                    "b_attempt": attempt,
                    "b_lease": lease,
                    "b_now": now,
                }
            )
            attempt_rows.append(
                {
                    "b_id": attempt_id,
                    "b_job_id": row.id,
                    "b_attempt": attempt,
                    "b_node_id": session.node_id,
                    "b_status": ASSIGNED,
                    "b_received_at": now,
                    "b_stdout": b"",
                    "b_stderr": b"",
                    "b_stdout_truncated": False,
                    "b_stderr_truncated": False,
                }
            )
            # Filled in place: messages built apart and passed in would be copied.
            msg = dispatch_pb2.ConnectResponse()
            build_spec(
                msg.assignment.spec,
                row.id,
                attempt,
                row.needs_inference,
                row.task,
                files.get(row.task_id, ()),
            )
            msg.assignment.lease_expires_at.CopyFrom(lease_ts)
            sends.append((session, msg))
        await _ASSIGN_JOBS.run(conn, job_rows)
        await _INSERT_ATTEMPTS.run(conn, attempt_rows)

    async def _claim(self, conn: AsyncConnection, inference: bool, limit: int) -> list[_Claimed]:
        if limit <= 0:
            return []
        rows = await conn.execute(_CLAIM[(inference, self._pg)], {"limit": limit})
        return [
            _Claimed(r[0], r[1], r[2], r[3], TaskFields(r[1], *r[4:-1]), bool(r[-1])) for r in rows
        ]

    # -- leases -----------------------------------------------------------------------

    async def expire_leases(self) -> int:
        """Requeues (attempt + 1 at the next dispatch) or fails jobs whose lease ran out."""
        now = utcnow()
        touched: set[str] = set()
        stale: list[tuple[str, int, str]] = []
        expired = JOBS.c.lease_expires_at < now
        async with self._engine.begin() as conn:
            stmt = (
                sa.select(JOBS.c.id, JOBS.c.task_id, JOBS.c.attempt, JOBS.c.node_id)
                .where(JOBS.c.status.in_(LIVE), JOBS.c.node_id.is_not(None), expired)
                .order_by(JOBS.c.lease_expires_at)
                .limit(1000)
            )
            if self._pg:
                stmt = stmt.with_for_update(skip_locked=True, of=JOBS)
            rows = list(await conn.execute(stmt))
            if not rows:
                return 0
            requeue = [r for r in rows if r.attempt < self._settings.max_attempts]
            lost = [r for r in rows if r.attempt >= self._settings.max_attempts]
            for part in chunked(requeue):
                await conn.execute(
                    JOBS.update()
                    .where(JOBS.c.id.in_([r.id for r in part]))
                    .values(
                        status=QUEUED,
                        node_id=None,
                        lease_expires_at=None,
                        started_at=None,
                        updated_at=now,
                    )
                )
                await conn.execute(
                    TASKS.update()
                    .where(TASKS.c.id.in_([r.task_id for r in part]), TASKS.c.status == RUNNING)
                    .values(status=QUEUED, updated_at=now)
                )
            for part in chunked(lost):
                await conn.execute(
                    JOBS.update()
                    .where(JOBS.c.id.in_([r.id for r in part]))
                    .values(
                        status="failed",
                        reason=NODE_LOST,
                        lease_expires_at=None,
                        ended_at=now,
                        updated_at=now,
                    )
                )
                await conn.execute(
                    TASKS.update()
                    .where(TASKS.c.id.in_([r.task_id for r in part]), TASKS.c.status.in_(LIVE))
                    .values(status="failed", reason=NODE_LOST, updated_at=now)
                )
            await conn.execute(
                ATTEMPTS.update()
                .where(
                    ATTEMPTS.c.job_id == sa.bindparam("b_job"),
                    ATTEMPTS.c.attempt == sa.bindparam("b_attempt"),
                    # No .in_(): an expanding IN cannot go into this executemany.
                    sa.or_(ATTEMPTS.c.status == ASSIGNED, ATTEMPTS.c.status == RUNNING),
                )
                .values(status=LOST, reason=NODE_LOST),
                [{"b_job": r.id, "b_attempt": r.attempt} for r in rows],
            )
            touched = {r.task_id for r in rows}
            stale = [(r.id, r.attempt, r.node_id) for r in rows]
            await self._tasks_in_tx(conn, touched)
            if requeue:
                await self._notifier.jobs_in_tx(conn)
        log.info("leases expired: %d requeued, %d failed (node_lost)", len(requeue), len(lost))
        # The old holder, if it is still connected here, drops its copy.
        for job_id, attempt, node_id in stale:
            session = self._registry.get(node_id)
            if session is not None:
                session.outstanding.discard((job_id, attempt))
                session.send(cancel_message(job_id, attempt, "lease_expired"))
        self._tasks_changed(touched)
        if requeue:
            self._event.set()
        return len(rows)

    # -- cancels ----------------------------------------------------------------------

    async def deliver_cancels(self) -> int:
        """Sends CancelJob for canceled jobs held by nodes connected here, once each:
        `cancel_requested` is the outbox flag and is cleared as the message is queued."""
        local = set(self._registry.node_ids())
        if not local:
            return 0
        async with self._engine.begin() as conn:
            rows = [
                r
                for r in await conn.execute(
                    sa.select(JOBS.c.id, JOBS.c.attempt, JOBS.c.node_id).where(
                        JOBS.c.status == "canceled",
                        JOBS.c.cancel_requested.is_(True),
                        JOBS.c.node_id.is_not(None),
                    )
                )
                if r.node_id in local
            ]
            for part in chunked(rows):
                await conn.execute(
                    JOBS.update()
                    .where(JOBS.c.id.in_([r.id for r in part]))
                    .values(cancel_requested=False)
                )
        for r in rows:
            session = self._registry.get(r.node_id)
            if session is not None:
                session.send(cancel_message(r.id, r.attempt, "canceled"))
        return len(rows)


def cancel_message(job_id: str, attempt: int, reason: str) -> dispatch_pb2.ConnectResponse:
    return dispatch_pb2.ConnectResponse(
        cancel=dispatch_pb2.CancelJob(job_id=job_id, attempt=attempt, reason=reason)
    )


def _plan(
    claimed: list[_Claimed], sessions: list[NodeSession]
) -> list[tuple[_Claimed, NodeSession]]:
    """Spreads jobs by free credits: each job goes to the session with the most left.
    Inference jobs first, to inference-capable sessions only."""
    plan: list[tuple[_Claimed, NodeSession]] = []
    for inference in (True, False):
        rows = [r for r in claimed if bool(r.needs_inference) is inference]
        if not rows:
            continue
        heap = [
            (-s.credits, i, s)
            for i, s in enumerate(sessions)
            if s.credits > 0 and (s.inference or not inference)
        ]
        heapq.heapify(heap)
        for row in rows:
            if not heap:
                break  # left unassigned: it stays queued and unlocked after commit
            _, i, session = heapq.heappop(heap)
            session.credits -= 1
            session.outstanding.add((row.id, row.attempt + 1))
            plan.append((row, session))
            if session.credits > 0:
                heapq.heappush(heap, (-session.credits, i, session))
    return plan


async def _load_files(
    conn: AsyncConnection, pg: bool, task_ids: set[str]
) -> dict[str, list[tuple[str, bytes]]]:
    files: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
    for part in chunked(sorted(task_ids)):
        for f in await conn.execute(_LOAD_FILES[pg], {"ids": list(part)}):
            files[f.task_id].append((f.name, f.content))
    return files
