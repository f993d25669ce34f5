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
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cynode.controlplane.v1 import dispatch_pb2
from cynode.orchestrator import lifecycle
from cynode.orchestrator.controlplane.caps import Room, RunningCaps, not_blocked
from cynode.orchestrator.controlplane.held import HeldConnection
from cynode.orchestrator.controlplane.jobspec import TaskFields, build_spec
from cynode.orchestrator.controlplane.nodestate import NodeState
from cynode.orchestrator.controlplane.notify import Notifier
from cynode.orchestrator.controlplane.sessions import NodeSession, Registry
from cynode.orchestrator.controlplane.settings import ControlPlaneSettings
from cynode.orchestrator.lifecycle import Reason, Status
from cynode.orchestrator.store.models import utcnow
from cynode.orchestrator.store.tables import (
    ATTACHMENTS,
    JOBS,
    NODES,
    TASKS,
    USERS,
    any_id,
    chunked,
)

log = logging.getLogger(__name__)


class _Claimed(NamedTuple):
    id: str
    task_id: str
    attempt: int
    needs_inference: bool
    task: TaskFields
    has_files: bool


# Keyed by "is Postgres": the id-list statements differ by backend (see any_id).
_LOAD_FILES = {
    pg: sa.select(ATTACHMENTS.c.task_id, ATTACHMENTS.c.name, ATTACHMENTS.c.content)
    .where(any_id(ATTACHMENTS.c.task_id, pg))
    .order_by(ATTACHMENTS.c.id)
    for pg in (True, False)
}


def _claim_stmt(inference: bool, pg: bool, capped: bool = False) -> Any:
    """Queued jobs with their tasks' spec columns, in one statement; on Postgres the job
    rows (only) are locked, skipping rows another replica holds. `capped` (a running-jobs
    limit is set somewhere): also each job's user and own limit, and none of the users
    bound as `blocked`."""
    columns: list[Any] = [
        JOBS.c.id,
        JOBS.c.task_id,
        JOBS.c.attempt,
        JOBS.c.needs_inference,
        # TaskFields after its id (the job's task_id), in its order.
        *(TASKS.c[name] for name in TaskFields._fields[1:]),
        # Most tasks have no attachments: the round then skips their query.
        sa.exists().where(ATTACHMENTS.c.task_id == TASKS.c.id).label("has_files"),
    ]
    joined = JOBS.join(TASKS, TASKS.c.id == JOBS.c.task_id)
    where = [
        JOBS.c.status == Status.QUEUED,
        JOBS.c.node_id.is_(None),
        JOBS.c.cancel_requested.is_(False),
        JOBS.c.needs_inference.is_(inference),
    ]
    if capped:
        columns += [TASKS.c.user_id, USERS.c.max_running_jobs]
        joined = joined.join(USERS, USERS.c.id == TASKS.c.user_id)
        where.append(not_blocked(pg))
    stmt = (
        sa.select(*columns)
        .select_from(joined)
        .where(*where)
        # Fair share (SPEC §3.9): lowest start tag first, round-robin across users.
        .order_by(JOBS.c.fair_key, JOBS.c.id)
        .limit(sa.bindparam("limit", type_=sa.Integer))
    )
    if pg:
        stmt = stmt.with_for_update(skip_locked=True, of=JOBS)
    return stmt


_CLAIM = {
    (inf, pg, capped): _claim_stmt(inf, pg, capped)
    for inf in (True, False)
    for pg in (True, False)
    for capped in (True, False)
}


_PAUSED = sa.select(NODES.c.id).where(NODES.c.admin_state != NodeState.ACTIVE)


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
        self._caps = RunningCaps(settings.max_running_jobs)
        # Nodes an administrator drained or disabled (any replica's): no new work.
        self.paused: set[str] = set()
        self._pause_changes = 0
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
            held = await lifecycle.hold(conn, floor)
        if held:
            log.info(
                "start-up: %d running job(s) keep their lease for %d s while nodes reconnect",
                held,
                2 * self._settings.lease_seconds,
            )
        return held

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="controlplane-scheduler")

    async def load_paused(self) -> None:
        """Reads which nodes take no new work: at start, at every sweep (a backstop for a
        missed NOTIFY) and when a replica says an administrator changed one."""
        changes = self._pause_changes
        async with self._engine.connect() as conn:
            found = {r[0] for r in await conn.execute(_PAUSED)}
        # A change made here while the query ran may be newer than what it read.
        if changes == self._pause_changes:
            self.paused = found

    def pause(self, node_id: str, paused: bool) -> None:
        """This replica's own change, applied before its caller answers."""
        self._pause_changes += 1
        if paused:
            self.paused.add(node_id)
        else:
            self.paused.discard(node_id)
            self._event.set()

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
            await self.load_paused()
            await self.expire_leases()
        if self._cancels_due:
            self._cancels_due = False
            await self.deliver_cancels()
        while await self.assign() >= self._settings.claim_batch:
            pass

    # -- assignment -------------------------------------------------------------------

    async def assign(self) -> int:
        """One claim-and-send pass; returns how many jobs it dispatched."""
        paused = self.paused
        sessions = [
            s
            for s in self._registry
            if s.credits > 0 and not s.closed and (not paused or s.node_id not in paused)
        ]
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
                room = await self._caps.room(conn)
                claimed = await self._claim(conn, True, inf_credits, room) if inf_credits else []
                claimed += await self._claim(conn, False, total - len(claimed), room)
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
        claims: list[tuple[str, str, int]] = []
        lease_ts = Timestamp()
        lease_ts.FromDatetime(lease)
        for row, session in plan:
            attempt = row.attempt + 1
            claims.append((row.id, session.node_id, attempt))
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
        await lifecycle.claim(conn, claims, now, lease)

    async def _claim(
        self, conn: AsyncConnection, inference: bool, limit: int, room: Room | None = None
    ) -> list[_Claimed]:
        if limit <= 0:
            return []
        if room is None:
            rows = await conn.execute(_CLAIM[(inference, self._pg, False)], {"limit": limit})
            return [
                _Claimed(r[0], r[1], r[2], r[3], TaskFields(r[1], *r[4:-1]), bool(r[-1]))
                for r in rows
            ]
        # Over a user's running-jobs limit the job is left out: it stays queued (on
        # Postgres its row lock ends with this transaction).
        rows = await conn.execute(
            _CLAIM[(inference, self._pg, True)], {"limit": limit, "blocked": room.blocked}
        )
        return [
            _Claimed(r[0], r[1], r[2], r[3], TaskFields(r[1], *r[4:-3]), bool(r[-3]))
            for r in rows
            if room.take(r[-2], r[-1])
        ]

    # -- leases -----------------------------------------------------------------------

    async def expire_leases(
        self, before: Callable[[AsyncConnection, datetime], Awaitable[None]] | None = None
    ) -> int:
        """Requeues (attempt + 1 at the next dispatch) or fails jobs whose lease ran out.
        `before` runs first in the same transaction (a disabled node's leases made to run
        out now: no heartbeat can renew them in between)."""
        now = utcnow()
        async with self._engine.begin() as conn:
            if before is not None:
                await before(conn, now)
            expired = await lifecycle.expire(conn, now, self._settings.max_attempts, lock=self._pg)
            if not expired.copies:
                return 0
            await self._tasks_in_tx(conn, expired.task_ids)
            if expired.requeued:
                await self._notifier.jobs_in_tx(conn)
        log.info(
            "leases expired: %d requeued, %d failed (node_lost)", expired.requeued, expired.failed
        )
        # The old holder, if it is still connected here, drops its copy.
        for job_id, attempt, node_id in expired.copies:
            session = self._registry.get(node_id)
            if session is not None:
                session.outstanding.discard((job_id, attempt))
                session.send(cancel_message(job_id, attempt, Reason.LEASE_EXPIRED))
        self._tasks_changed(expired.task_ids)
        if expired.requeued:
            self._event.set()
        return len(expired.copies)

    # -- cancels ----------------------------------------------------------------------

    async def deliver_cancels(self) -> int:
        """Sends CancelJob for canceled jobs held by nodes connected here, once each:
        `cancel_requested` is the outbox flag and is cleared as the message is queued."""
        local = set(self._registry.node_ids())
        if not local:
            return 0
        async with self._engine.begin() as conn:
            rows = await lifecycle.take_cancels(conn, local)
        for r in rows:
            session = self._registry.get(r.node_id)
            if session is not None:
                session.send(cancel_message(r.id, r.attempt, Reason.CANCELED))
        return len(rows)


def cancel_message(job_id: str, attempt: int, reason: str) -> dispatch_pb2.ConnectResponse:
    return dispatch_pb2.ConnectResponse(
        cancel=dispatch_pb2.CancelJob(job_id=job_id, attempt=attempt, reason=reason)
    )


def _rank(session: NodeSession, i: int, plain: bool) -> tuple[int, int, int, NodeSession]:
    """Heap order: for a plain job a warm sandbox at hand first, then the most credits."""
    warm = -1 if plain and session.warm_ready > 0 else 0
    return (warm, -session.credits, i, session)


def _plan(
    claimed: list[_Claimed], sessions: list[NodeSession]
) -> list[tuple[_Claimed, NodeSession]]:
    """Spreads jobs by free credits: each job goes to the session with the most left.
    Inference jobs first, to inference-capable sessions only. A plain job prefers a
    session with a warm sandbox at hand (SPEC §4.10), then the most credits."""
    plan: list[tuple[_Claimed, NodeSession]] = []
    for inference in (True, False):
        rows = [r for r in claimed if bool(r.needs_inference) is inference]
        if not rows:
            continue
        heap = [
            _rank(s, i, not inference)
            for i, s in enumerate(sessions)
            if s.credits > 0 and (s.inference or not inference)
        ]
        heapq.heapify(heap)
        for row in rows:
            if not heap:
                break  # left unassigned: it stays queued and unlocked after commit
            _, _, i, session = heapq.heappop(heap)
            session.credits -= 1
            if not inference and session.warm_ready > 0:
                session.warm_ready -= 1
            session.outstanding.add((row.id, row.attempt + 1))
            plan.append((row, session))
            if session.credits > 0:
                heapq.heappush(heap, _rank(session, i, not inference))
    return plan


async def _load_files(
    conn: AsyncConnection, pg: bool, task_ids: set[str]
) -> dict[str, list[tuple[str, bytes]]]:
    files: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
    for part in chunked(sorted(task_ids)):
        for f in await conn.execute(_LOAD_FILES[pg], {"ids": list(part)}):
            files[f.task_id].append((f.name, f.content))
    return files
