"""Composition of the user gateway, and the running orchestrator process.

`build_gateway` wires store, auth and task logic into servicer objects; `Orchestrator`
serves them on the gateway's REST (uvicorn) and gRPC ports in one event loop.

Control plane: `Orchestrator` takes a `ControlPlaneHook` (see `control_plane_hook`),
an async callable that receives the Gateway and returns `ControlPlaneParts`: services
to add to the gateway ports (e.g. NodeAdminService), the inference-path check readyz
uses, and start/stop callables for its own listeners (12082/12083).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from cynode.orchestrator.artifacts import FsBlobStore
from cynode.orchestrator.artifacts.download import artifact_routes
from cynode.orchestrator.auditlog import AuditServicer
from cynode.orchestrator.auth import (
    Authenticator,
    AuthServicer,
    LoginThrottle,
    Passwords,
    SessionManager,
    TokenIssuer,
)
from cynode.orchestrator.auth.userservice import UserServicer
from cynode.orchestrator.config import Settings, SettingsError, options_of
from cynode.orchestrator.events import EventBus
from cynode.orchestrator.gateway import TaskBook, TaskServicer
from cynode.orchestrator.grpc_server import HideUnexpectedErrors
from cynode.orchestrator.health import (
    InferenceReady,
    Readiness,
    health_routes,
    store_inference_ready,
)
from cynode.orchestrator.listeners import ServicePorts, Tls, grpc_address
from cynode.orchestrator.metrics import GatewayMetrics
from cynode.orchestrator.quotas import QuotaDefaults
from cynode.orchestrator.rest import build_rest_app
from cynode.orchestrator.store import session_factory

log = logging.getLogger(__name__)

AUTH_SERVICE = "cynode.gateway.v1.AuthService"
TASK_SERVICE = "cynode.gateway.v1.TaskService"
USER_SERVICE = "cynode.gateway.v1.UserService"
AUDIT_SERVICE = "cynode.gateway.v1.AuditService"
# The largest task SPEC §2 allows: 16 attachments of 10 MiB plus the largest input.
MAX_TASK_BYTES = 16 * 10 * 1024 * 1024 + 2 * 1024 * 1024
# gRPC carries that as bytes; REST as JSON, where attachments are base64 (4/3 larger).
GRPC_MAX_MESSAGE_BYTES = MAX_TASK_BYTES
REST_MAX_BODY_BYTES = MAX_TASK_BYTES * 4 // 3 + 1024 * 1024


def grpc_interceptors() -> list[HideUnexpectedErrors]:
    """What wraps every gRPC call on the gateway and control-plane ports: unexpected
    servicer errors become INTERNAL "internal error", as on REST."""
    return [HideUnexpectedErrors()]


@dataclass
class Gateway:
    settings: Settings
    engine: AsyncEngine
    factory: async_sessionmaker[AsyncSession]
    bus: EventBus
    passwords: Passwords
    authenticator: Authenticator
    sessions: SessionManager
    book: TaskBook
    readiness: Readiness
    metrics: GatewayMetrics
    blobs: FsBlobStore
    extra_services: dict[str, object] = field(default_factory=dict)
    # Handlers of their own on the REST port (the OpenAI door), matched before the shim.
    extra_routes: list[BaseRoute] = field(default_factory=list)

    def services(self) -> dict[str, object]:
        return {
            AUTH_SERVICE: AuthServicer(self.sessions, self.authenticator, self.book.quotas),
            TASK_SERVICE: TaskServicer(self.book, self.authenticator, blobs=self.blobs),
            AUDIT_SERVICE: AuditServicer(self.factory, self.authenticator),
            USER_SERVICE: UserServicer(
                self.factory, self.passwords, self.authenticator, self.book.quotas
            ),
            **self.extra_services,
        }

    def rest_app(self, services: Mapping[str, object] | None = None) -> ASGIApp:
        app = build_rest_app(
            services if services is not None else self.services(),
            extra_routes=[
                *health_routes(self.readiness),
                self.metrics.route(),
                *artifact_routes(self.book, self.authenticator, self.blobs),
                *self.extra_routes,
            ],
            max_body_bytes=REST_MAX_BODY_BYTES,
        )
        return self.metrics.wrap(app)


def build_gateway(
    settings: Settings,
    engine: AsyncEngine,
    *,
    bus: EventBus | None = None,
    passwords: Passwords | None = None,
    inference_ready: InferenceReady | None = None,
) -> Gateway:
    factory = session_factory(engine)
    passwords = passwords or Passwords()
    issuer = TokenIssuer(
        settings.resolve_jwt_secret(), timedelta(seconds=settings.access_token_ttl_seconds)
    )
    authenticator = Authenticator(factory, issuer)
    sessions = SessionManager(
        factory,
        passwords,
        issuer,
        timedelta(seconds=settings.refresh_token_ttl_seconds),
        LoginThrottle(settings.login_max_failures, settings.login_window_seconds),
        on_family_revoked=authenticator.family_revoked,
    )
    bus = bus or EventBus()
    return Gateway(
        settings=settings,
        engine=engine,
        factory=factory,
        bus=bus,
        passwords=passwords,
        authenticator=authenticator,
        sessions=sessions,
        book=TaskBook(factory, bus, QuotaDefaults.of(settings.control_plane)),
        readiness=Readiness(
            engine,
            inference_ready or store_inference_ready(factory),
            require_inference=settings.require_inference,
        ),
        metrics=GatewayMetrics(factory),
        blobs=FsBlobStore(settings.effective_artifacts_dir),
    )


@dataclass
class ControlPlaneParts:
    """What the control plane adds to a running orchestrator."""

    gateway_services: Mapping[str, object] = field(default_factory=dict)
    # REST routes of the gateway's own (the OpenAI door).
    gateway_routes: Sequence[BaseRoute] = ()
    inference_ready: InferenceReady | None = None
    start: Callable[[], Awaitable[None]] | None = None
    stop: Callable[[], Awaitable[None]] | None = None
    # The control plane's own listeners (their bound ports once started).
    ports: ServicePorts | None = None
    # Told the gateway's bound gRPC port (other replicas forward inference calls there).
    gateway_bound: Callable[[int], None] | None = None


ControlPlaneHook = Callable[[Gateway], Awaitable[ControlPlaneParts]]


def control_plane_hook() -> ControlPlaneHook:
    """The control plane: NodeService and DispatchService on their own ports
    (12082 REST, 12083 gRPC), NodeAdminService on the gateway's, and the scheduler."""
    return serve_control_plane


async def serve_control_plane(gw: Gateway) -> ControlPlaneParts:
    # Imported here: the gateway stays usable (and testable) on its own.
    from cynode.orchestrator.controlplane import ControlPlaneSettings, build_control_plane
    from cynode.orchestrator.inference.forward import root_certificates
    from cynode.orchestrator.inference.openai_door import OpenAIDoor, record_redaction

    settings = gw.settings
    if not settings.node_psk:
        raise SettingsError("NODE_PSK is required: nodes register with it (or use --dev)")
    host = settings.host
    scheme = "https" if settings.tls_enabled else "http"
    cp = build_control_plane(
        gw.engine,
        gw.bus,
        ControlPlaneSettings(
            **options_of(settings.control_plane),
            psk=settings.node_psk,
            jwt_secret=settings.resolve_jwt_secret(),
            base_url=f"{scheme}://{host}:{settings.control_rest_port}",
            grpc_endpoint=grpc_address(host, settings.control_grpc_port),
            rest_endpoint=f"{host}:{settings.control_rest_port}",
            # Sweep well inside one lease: an expired lease is requeued within it.
            sweep_seconds=min(5.0, settings.control_plane.lease_seconds / 4),
            artifacts_ttl_seconds=settings.artifacts_ttl_seconds,
            forward_tls=settings.tls_enabled,
            forward_root_ca=root_certificates(settings.tls_cert),
        ),
        authenticate=gw.authenticator.authenticate,
        blobs=gw.blobs,
        metrics_registry=gw.metrics.registry,
    )
    door = OpenAIDoor(
        cp.replica_router,
        gw.authenticator,
        cp.inference_metrics,
        usage=cp.usage,
        on_redacted=lambda who, found: record_redaction(gw.factory, who, found),
    )
    ports = ServicePorts(
        cp.servicers,
        build_rest_app(cp.servicers, extra_routes=health_routes(gw.readiness, "controlplane")),
        host=host,
        rest_port=settings.control_rest_port,
        grpc_port=settings.control_grpc_port,
        max_message_bytes=GRPC_MAX_MESSAGE_BYTES,
        tls=_tls(settings, client_ca=settings.node_client_ca),
        interceptors=grpc_interceptors(),
    )

    async def start() -> None:
        await cp.start()  # first: it holds the leases before any node can say what it has
        await ports.start()
        log.info(
            "control plane listening: REST %s:%d, gRPC %s:%d",
            host,
            ports.rest_port,
            host,
            ports.grpc_port,
        )

    async def stop() -> None:
        await cp.stop()
        await ports.stop()

    return ControlPlaneParts(
        gateway_services=cp.gateway_servicers,
        gateway_routes=door.routes(),
        inference_ready=cp.inference_path_available,
        start=start,
        stop=stop,
        ports=ports,
        gateway_bound=lambda port: cp.gateway_bound(grpc_address(advertised_host(settings), port)),
    )


def advertised_host(settings: Settings) -> str:
    """The host other replicas reach this one at: `advertise_host`, else the listen
    host, or this machine's name when that is every address."""
    if settings.advertise_host:
        return settings.advertise_host
    if settings.host in ("0.0.0.0", "::", ""):
        return socket.getfqdn()
    return settings.host


def _tls(settings: Settings, client_ca: Path | None = None) -> Tls | None:
    if settings.tls_cert is not None and settings.tls_key is not None:
        return Tls(settings.tls_cert, settings.tls_key, client_ca)
    return None


class Orchestrator:
    """The gateway's listeners (and the control plane's, through the hook)."""

    def __init__(self, gateway: Gateway, control_plane: ControlPlaneHook | None = None) -> None:
        self.gateway = gateway
        self._hook = control_plane
        self._parts = ControlPlaneParts()
        self._ports: ServicePorts | None = None
        self.rest_port = 0
        self.grpc_port = 0

    async def start(self) -> None:
        settings = self.gateway.settings
        if self._hook is not None:
            self._parts = await self._hook(self.gateway)
            self.gateway.extra_services.update(self._parts.gateway_services)
            self.gateway.extra_routes.extend(self._parts.gateway_routes)
            if self._parts.inference_ready is not None:
                self.gateway.readiness.inference_ready = self._parts.inference_ready
        services = self.gateway.services()
        self._ports = ServicePorts(
            services,
            self.gateway.rest_app(services),
            host=settings.host,
            rest_port=settings.gateway_rest_port,
            grpc_port=settings.gateway_grpc_port,
            max_message_bytes=GRPC_MAX_MESSAGE_BYTES,
            tls=_tls(settings),
            interceptors=grpc_interceptors(),
        )
        await self._ports.start()
        self.rest_port = self._ports.rest_port
        self.grpc_port = self._ports.grpc_port
        if self._parts.gateway_bound is not None:
            self._parts.gateway_bound(self.grpc_port)
        if self._parts.start is not None:
            await self._parts.start()
        log.info(
            "user gateway listening: REST %s:%d, gRPC %s:%d",
            settings.host,
            self.rest_port,
            settings.host,
            self.grpc_port,
        )

    @property
    def control_ports(self) -> ServicePorts | None:
        return self._parts.ports

    async def stop(self) -> None:
        if self._parts.stop is not None:
            await self._parts.stop()
        if self._ports is not None:
            await self._ports.stop()
