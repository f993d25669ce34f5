"""DispatchService.Connect: the stream a node holds open to get work.

The protocol (Hello and what the orchestrator does with the jobs a node holds, credits,
assignments, results and their acks, heartbeats and leases, cancels and their reasons,
config changes, batching, reconnects and restarts) is specified in docs/spec.md, SPEC §7;
the job transitions it causes are SPEC §3.6.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import timedelta
from typing import Any

import grpc
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cynode.controlplane.v1 import dispatch_pb2, dispatch_pb2_grpc
from cynode.orchestrator import lifecycle
from cynode.orchestrator.controlplane.batching import coalesce
from cynode.orchestrator.controlplane.ingest import Beat, Chunk, Ingest, Result, Started
from cynode.orchestrator.controlplane.nodeconfig import latest_config
from cynode.orchestrator.controlplane.scheduler import Scheduler, cancel_message
from cynode.orchestrator.controlplane.sessions import NodeSession, Registry
from cynode.orchestrator.controlplane.settings import ControlPlaneSettings
from cynode.orchestrator.controlplane.tokens import NodeClaims, require_node
from cynode.orchestrator.store import Node, session_factory, transaction
from cynode.orchestrator.store.models import utcnow
from cynode.orchestrator.store.tables import JOBS, NODES, chunked

log = logging.getLogger(__name__)


class DispatchServicer(dispatch_pb2_grpc.DispatchServiceServicer):
    def __init__(
        self,
        engine: AsyncEngine,
        settings: ControlPlaneSettings,
        registry: Registry,
        ingest: Ingest,
        scheduler: Scheduler,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self._engine = engine
        self._factory = session_factory(engine)
        self._settings = settings
        self._registry = registry
        self._ingest = ingest
        self._scheduler = scheduler
        self._spawn = spawn

    async def Connect(  # type: ignore[override]
        self,
        request_iterator: AsyncIterator[dispatch_pb2.ConnectRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[dispatch_pb2.ConnectResponse]:
        claims = await require_node(context, self._settings.jwt_secret)
        try:
            first = await anext(request_iterator)
        except StopAsyncIteration:
            return
        if first.WhichOneof("msg") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "first message must be hello")
        if first.hello.node_slug not in ("", claims.slug):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "node_slug is not this node's")
        greeting = await self._greet(claims, first.hello)
        if greeting is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "node not registered")
        session, replies = greeting
        session.batches = first.hello.accepts_batches
        old = self._registry.add(session)
        if old is not None:
            old.close()
        for msg in replies[1:]:
            session.send(msg)
        reader = asyncio.create_task(self._read(session, request_iterator))
        try:
            # The HelloAck goes alone, first: the node learns from it that we batch.
            yield replies[0]
            while out := await session.take():
                for msg in coalesce(out, _response_batch) if session.batches else out:
                    yield msg
        finally:
            reader.cancel()
            session.closed = True
            if self._registry.remove(session):
                self._spawn(self._offline(session.node_id))

    async def _greet(
        self, claims: NodeClaims, hello: dispatch_pb2.Hello
    ) -> tuple[NodeSession, list[dispatch_pb2.ConnectResponse]] | None:
        now = utcnow()
        lease = now + timedelta(seconds=self._settings.lease_seconds)
        replies: list[dispatch_pb2.ConnectResponse] = []
        held = {h.job_id: h for h in hello.held_jobs}
        lost: list[str] = []
        async with transaction(self._factory) as s:
            node = await s.get(Node, claims.node_id)
            if node is None:
                return None
            node.status = "online"
            node.connected_replica = self._settings.replica_id[:64]
            node.last_heartbeat_at = now
            node.updated_at = now
            conn = await s.connection()
            mine = {
                r.id: r
                for r in await conn.execute(
                    sa.select(JOBS.c.id, JOBS.c.attempt, JOBS.c.status).where(
                        JOBS.c.node_id == node.id, JOBS.c.status.in_(lifecycle.LIVE)
                    )
                )
            }
            others: dict[str, Any] = {}
            for part in chunked(sorted(set(held) - set(mine))):
                rows = await conn.execute(
                    sa.select(
                        JOBS.c.id, JOBS.c.task_id, JOBS.c.attempt, JOBS.c.status, JOBS.c.node_id
                    ).where(JOBS.c.id.in_(part))
                )
                others.update({r.id: r for r in rows})
            keep = []
            for job_id, h in held.items():
                row = mine.get(job_id)
                still_mine = row is not None and row.attempt == h.attempt
                if still_mine or (
                    not h.has_result and await _reclaim(conn, node.id, h, others.get(job_id))
                ):
                    keep.append(job_id)
                elif not h.has_result:
                    other = others.get(job_id)
                    reason = (
                        lifecycle.Reason.CANCELED
                        if other is not None and other.status == lifecycle.Status.CANCELED
                        else lifecycle.Reason.SUPERSEDED
                    )
                    replies.append(cancel_message(job_id, h.attempt, reason))
            lost = [j for j in mine if j not in keep]
            await lifecycle.extend(conn, keep, lease)
            # Assigned to this node but not held by it: it never got them (or lost them
            # in a restart), so the sweep requeues them.
            await lifecycle.lapse(conn, lost, now)
            config = await latest_config(s, node.id)
            session = NodeSession(
                node.id,
                node.slug,
                inference=node.inference_supported,
                capacity=max(1, node.max_concurrency),
                outstanding={(j, held[j].attempt) for j in keep if not held[j].has_result},
            )
        ack = dispatch_pb2.ConnectResponse(
            hello_ack=dispatch_pb2.HelloAck(
                node_id=session.node_id,
                lease_seconds=self._settings.lease_seconds,
                heartbeat_seconds=self._settings.heartbeat_seconds,
                accepts_batches=True,
            )
        )
        replies.insert(0, ack)
        if config is not None and config.config_version != hello.config_version:
            replies.append(config_changed(config.config_version))
        if lost:
            self._scheduler.wake(sweep=True)
        return session, replies

    async def _read(
        self, session: NodeSession, requests: AsyncIterator[dispatch_pb2.ConnectRequest]
    ) -> None:
        node_id = session.node_id
        try:
            async for req in requests:
                kind = req.WhichOneof("msg")
                if kind == "batch":
                    for item in req.batch.items:
                        self._handle(session, item, item.WhichOneof("msg"))
                else:
                    self._handle(session, req, kind)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the stream broke; the handler's cleanup follows
            log.debug("dispatch stream of %s ended: %s", node_id, exc)
        finally:
            session.close()

    def _handle(
        self, session: NodeSession, req: dispatch_pb2.ConnectRequest, kind: str | None
    ) -> None:
        node_id = session.node_id
        if kind == "ready":
            session.grant(req.ready.free_slots)
            session.warm_ready = max(0, req.ready.warm_ready)
            if session.credits > 0:
                self._scheduler.wake()
        elif kind == "heartbeat":
            running = [(h.job_id, h.attempt) for h in req.heartbeat.running]
            self._ingest.put(Beat(node_id, running, utcnow()))
        elif kind == "job_started":
            m = req.job_started
            self._ingest.put(Started(node_id, m.job_id, m.attempt, utcnow()))
        elif kind == "output_chunk":
            c = req.output_chunk
            self._ingest.put(Chunk(node_id, c.job_id, c.attempt, c.stream, c.offset, c.data))
        elif kind == "job_result":
            result = req.job_result
            result.node_id = node_id  # trust the token, not the message
            session.outstanding.discard((result.job_id, result.attempt))
            self._ingest.put(Result(node_id, result, self._acker(session, result)))
        else:
            # A second Hello, a batch nested in a batch, or a kind newer than this code.
            log.debug("node %s sent %s mid-stream; ignored", node_id, kind)

    def _acker(self, session: NodeSession, result: Any) -> Callable[[], None]:
        # Filled in place: a ResultAck built apart and passed in would be copied.
        ack = dispatch_pb2.ConnectResponse()
        ack.result_ack.job_id = result.job_id
        ack.result_ack.attempt = result.attempt

        def send() -> None:
            # The node may have reconnected since: acknowledge on its current stream.
            current = self._registry.get(session.node_id) or session
            current.send(ack)

        return send

    async def _offline(self, node_id: str) -> None:
        if self._registry.get(node_id) is not None:
            return  # it came back already
        async with self._engine.begin() as conn:
            await conn.execute(
                NODES.update()
                .where(
                    NODES.c.id == node_id,
                    NODES.c.connected_replica == self._settings.replica_id[:64],
                    NODES.c.status == "online",
                )
                .values(status="offline", updated_at=utcnow())
            )


async def _reclaim(
    conn: AsyncConnection, node_id: str, held: dispatch_pb2.HeldJob, row: Any
) -> bool:
    """Takes back a job whose lease ran out while its node was away (requeued, not yet
    dispatched again) when the node still runs that very copy."""
    if row is None or (row.status, row.node_id, row.attempt) != (
        lifecycle.Status.QUEUED,
        None,
        held.attempt,
    ):
        return False
    if not await lifecycle.reclaim(conn, node_id, held.job_id, held.attempt, row.task_id, utcnow()):
        return False
    log.info(
        "job %s attempt %d reclaimed by its node after a lapsed lease", held.job_id, held.attempt
    )
    return True


def _response_batch(items: list[dispatch_pb2.ConnectResponse]) -> dispatch_pb2.ConnectResponse:
    return dispatch_pb2.ConnectResponse(batch=dispatch_pb2.ResponseBatch(items=items))


def config_changed(version: str) -> dispatch_pb2.ConnectResponse:
    return dispatch_pb2.ConnectResponse(
        config_changed=dispatch_pb2.ConfigChanged(config_version=version)
    )
