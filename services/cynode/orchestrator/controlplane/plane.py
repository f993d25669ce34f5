"""Wires the control plane together for `cynode-orchestrator serve`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Mapping
from datetime import timedelta
from typing import Any

import grpc
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cynode.controlplane.v1 import artifacts_pb2_grpc, dispatch_pb2_grpc, nodes_pb2_grpc
from cynode.controlplane.v1 import inference_pb2_grpc as link_pb2_grpc
from cynode.gateway.v1 import inference_pb2_grpc as gateway_inference_pb2_grpc
from cynode.gateway.v1 import nodes_pb2_grpc as admin_pb2_grpc
from cynode.orchestrator import lifecycle
from cynode.orchestrator.artifacts.blobs import FsBlobStore
from cynode.orchestrator.artifacts.retention import Sweeper
from cynode.orchestrator.auth.admins import Authenticate
from cynode.orchestrator.controlplane.admin import NodeAdminServicer, inference_path_available
from cynode.orchestrator.controlplane.dispatch import DispatchServicer, config_changed
from cynode.orchestrator.controlplane.ingest import Ingest
from cynode.orchestrator.controlplane.nodeadmin import NodeAdmin
from cynode.orchestrator.controlplane.nodes import NodeServicer
from cynode.orchestrator.controlplane.notify import Notifier, PgNotifier
from cynode.orchestrator.controlplane.scheduler import Scheduler
from cynode.orchestrator.controlplane.sessions import Registry
from cynode.orchestrator.controlplane.settings import ControlPlaneSettings
from cynode.orchestrator.controlplane.uploads import ArtifactUploadServicer
from cynode.orchestrator.events import JOBS, EventBus, task_topic
from cynode.orchestrator.inference import InferenceMetrics, LinkRegistry, Router
from cynode.orchestrator.inference.directory import LinkDirectory
from cynode.orchestrator.inference.forward import Forwarder
from cynode.orchestrator.inference.link_servicer import InferenceLinkServicer
from cynode.orchestrator.inference.replicas import ReplicaRouter
from cynode.orchestrator.inference.servicer import InferenceServicer
from cynode.orchestrator.inference.usage import UsageBook
from cynode.orchestrator.store import session_factory

log = logging.getLogger(__name__)

NODE_SERVICE = "cynode.controlplane.v1.NodeService"
DISPATCH_SERVICE = "cynode.controlplane.v1.DispatchService"
NODE_ADMIN_SERVICE = "cynode.gateway.v1.NodeAdminService"
ARTIFACT_UPLOAD_SERVICE = "cynode.controlplane.v1.ArtifactUploadService"
INFERENCE_LINK_SERVICE = "cynode.controlplane.v1.InferenceLinkService"
INFERENCE_SERVICE = "cynode.gateway.v1.InferenceService"


async def _deny_all(context: grpc.aio.ServicerContext[Any, Any]) -> Any:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "no authenticator configured")


class ControlPlane:
    def __init__(
        self,
        engine: AsyncEngine,
        bus: EventBus,
        settings: ControlPlaneSettings,
        authenticate: Authenticate | None = None,
        blobs: FsBlobStore | None = None,
        metrics_registry: CollectorRegistry | None = None,
    ) -> None:
        self.engine = engine
        self.bus = bus
        self.settings = settings
        self.registry = Registry()
        self._background: set[asyncio.Task[None]] = set()
        self._jobs_watch: asyncio.Task[None] | None = None
        self._started = False
        self.notifier: Notifier = (
            PgNotifier(
                engine,
                settings.notify_channel,
                settings.replica_id,
                on_jobs=lambda: self.scheduler.wake(cancels=True),
                on_tasks=self._publish_tasks,
                on_nodes=self._nodes_changed,
                on_config=self.push_config_changed,
            )
            if engine.dialect.name == "postgresql"
            else Notifier()
        )
        self.ingest = Ingest(engine, settings.lease_seconds, self._tasks_in_tx, self._publish_tasks)
        self.scheduler = Scheduler(
            engine, self.registry, settings, self.notifier, self._tasks_in_tx, self._publish_tasks
        )
        self.node_servicer = NodeServicer(engine, settings, self.push_config_changed)
        self.dispatch_servicer = DispatchServicer(
            engine, settings, self.registry, self.ingest, self.scheduler, self.spawn
        )
        # None: this control plane takes no artifacts (a node's uploads are UNIMPLEMENTED).
        self.upload_servicer = (
            ArtifactUploadServicer(
                engine, blobs, settings.jwt_secret, self._publish_tasks, self._tasks_in_tx
            )
            if blobs is not None
            else None
        )
        self.artifact_sweeper = (
            Sweeper(
                engine,
                blobs,
                settings.artifacts_ttl_seconds,
                every=max(1.0, min(600.0, settings.artifacts_ttl_seconds / 10)),
            )
            if blobs is not None and settings.artifacts_ttl_seconds > 0
            else None
        )
        self.node_admin = NodeAdmin(
            engine, settings, self.scheduler, self.notifier, self.push_config_changed
        )
        self.admin_servicer = NodeAdminServicer(
            engine,
            authenticate or _deny_all,
            timedelta(seconds=settings.stale_after_seconds),
            self.node_admin,
        )
        # The models on the nodes (SPEC §10): links nodes hold open, and the router.
        self.links = LinkRegistry()
        self.inference_metrics = InferenceMetrics(metrics_registry)
        self.usage = UsageBook(engine, session_factory(engine))
        self.router = Router(
            self.links,
            user_limit=settings.inference_user_concurrency,
            queue_seconds=settings.inference_queue_seconds,
            allowed_models=settings.allowed_models,
            on_wait=self.inference_metrics.queue_wait.observe,
            on_outcome=self.usage.record,
        )
        self.link_servicer = InferenceLinkServicer(
            self.links, settings.jwt_secret, settings.allowed_models
        )
        # Several replicas (Postgres): each announces its links and forwards calls for
        # models only the others' links serve (SPEC §10.3). SQLite is single-replica.
        self.directory: LinkDirectory | None = None
        self.forwarder: Forwarder | None = None
        if engine.dialect.name == "postgresql":
            self.directory = LinkDirectory(engine, self.links, settings.replica_id)
            self.forwarder = Forwarder(
                settings.replica_id, tls=settings.forward_tls, root_ca=settings.forward_root_ca
            )
            dispatch, directory = self.links.on_change, self.directory

            def links_changed() -> None:
                dispatch()
                directory.changed()

            self.links.on_change = links_changed
        self.replica_router = ReplicaRouter(self.router, self.directory, self.forwarder)
        self.inference_servicer = InferenceServicer(self.replica_router, authenticate or _deny_all)

    # -- what serve plugs in ----------------------------------------------------------

    @property
    def servicers(self) -> Mapping[str, object]:
        """Control-plane port (12082 REST via the shim, 12083 gRPC)."""
        services: dict[str, object] = {
            NODE_SERVICE: self.node_servicer,
            DISPATCH_SERVICE: self.dispatch_servicer,
            INFERENCE_LINK_SERVICE: self.link_servicer,
        }
        if self.upload_servicer is not None:
            services[ARTIFACT_UPLOAD_SERVICE] = self.upload_servicer
        return services

    @property
    def gateway_servicers(self) -> Mapping[str, object]:
        """User gateway port (12080 REST, 12081 gRPC): admin views of the fleet."""
        return {
            NODE_ADMIN_SERVICE: self.admin_servicer,
            INFERENCE_SERVICE: self.inference_servicer,
        }

    def add_to_server(self, server: grpc.aio.Server) -> None:
        nodes_pb2_grpc.add_NodeServiceServicer_to_server(  # type: ignore[no-untyped-call]
            self.node_servicer, server
        )
        dispatch_pb2_grpc.add_DispatchServiceServicer_to_server(  # type: ignore[no-untyped-call]
            self.dispatch_servicer, server
        )
        if self.upload_servicer is not None:
            artifacts_pb2_grpc.add_ArtifactUploadServiceServicer_to_server(  # type: ignore[no-untyped-call]
                self.upload_servicer, server
            )
        link_pb2_grpc.add_InferenceLinkServiceServicer_to_server(  # type: ignore[no-untyped-call]
            self.link_servicer, server
        )

    def add_gateway_to_server(self, server: grpc.aio.Server) -> None:
        admin_pb2_grpc.add_NodeAdminServiceServicer_to_server(  # type: ignore[no-untyped-call]
            self.admin_servicer, server
        )
        gateway_inference_pb2_grpc.add_InferenceServiceServicer_to_server(  # type: ignore[no-untyped-call]
            self.inference_servicer, server
        )

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        await self.notifier.start()
        self.ingest.start()
        await self.scheduler.hold_leases()
        await self.scheduler.load_paused()
        self.scheduler.start()
        self._jobs_watch = asyncio.create_task(self._watch_jobs(), name="controlplane-jobs")
        if self.artifact_sweeper is not None:
            self.artifact_sweeper.start()
        if self.directory is not None:
            self.directory.start()

    def gateway_bound(self, address: str) -> None:
        """Where other replicas reach this one's gateway gRPC port: its links are
        announced from now on."""
        if self.directory is not None:
            self.directory.address = address
            self.directory.changed()

    async def stop(self) -> None:
        """Ends the streams (nodes reconnect elsewhere or later), writes what nodes sent,
        stops the loops. Leases are left alone: a restart within the lease keeps jobs."""
        if not self._started:
            return
        self._started = False
        for session in self.registry:
            session.close()
        for link in self.links:
            link.close()
        if self.directory is not None:
            await self.directory.stop()
        if self.forwarder is not None:
            await self.forwarder.close()
        await self.usage.flush()
        if self._jobs_watch is not None:
            self._jobs_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._jobs_watch
        if self.artifact_sweeper is not None:
            await self.artifact_sweeper.stop()
        await self.scheduler.stop()
        await self.ingest.stop()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.notifier.stop()

    async def inference_path_available(self) -> bool:
        return await inference_path_available(
            self.engine, timedelta(seconds=self.settings.stale_after_seconds)
        )

    # -- internals --------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def push_config_changed(self, node_id: str, version: str) -> None:
        session = self.registry.get(node_id)
        if session is not None:
            session.send(config_changed(version))

    def _nodes_changed(self, _node_ids: list[str]) -> None:
        """Another replica drained, disabled or enabled nodes: reread which are paused,
        and sweep (a disabled node's lapsed jobs are requeued by whoever sweeps first)."""

        async def reload() -> None:
            await self.scheduler.load_paused()
            self.scheduler.wake(sweep=True)

        self.spawn(reload())

    async def _watch_jobs(self) -> None:
        async with self.bus.subscribe(JOBS) as queue:
            while True:
                await queue.get()
                while not queue.empty():
                    queue.get_nowait()
                self.scheduler.wake(cancels=True)
                try:
                    await self.notifier.jobs()
                except Exception:
                    log.warning("could not notify other replicas", exc_info=True)

    async def _tasks_in_tx(self, conn: AsyncConnection, task_ids: set[str]) -> None:
        await self.notifier.tasks_in_tx(conn, task_ids)

    def _publish_tasks(
        self, task_ids: set[str] | list[str], ended: Mapping[str, lifecycle.Ended] | None = None
    ) -> None:
        # A task that ended in this process's commit wakes its watchers with what the
        # commit wrote (they need not read it back); anything else wakes them to read.
        for task_id in task_ids:
            self.bus.publish(task_topic(task_id), ended.get(task_id) if ended else None)


def build_control_plane(
    engine: AsyncEngine,
    bus: EventBus,
    settings: ControlPlaneSettings,
    *,
    authenticate: Authenticate | None = None,
    blobs: FsBlobStore | None = None,
    metrics_registry: CollectorRegistry | None = None,
) -> ControlPlane:
    return ControlPlane(engine, bus, settings, authenticate, blobs, metrics_registry)
