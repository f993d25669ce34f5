"""Composition of the user gateway, and the running orchestrator process.

`build_gateway` wires store, auth and task logic into servicer objects; `Orchestrator`
serves them on the gateway's REST (uvicorn) and gRPC ports in one event loop.

Control plane: `Orchestrator` takes a `ControlPlaneHook` (see `control_plane_hook`),
an async callable that receives the Gateway and returns `ControlPlaneParts`: services
to add to the gateway ports (e.g. NodeAdminService), the inference-path check readyz
uses, and start/stop callables for its own listeners (12082/12083).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import grpc
import uvicorn
from google.protobuf import descriptor_pool
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.types import ASGIApp

from cynode.orchestrator.auth import (
    Authenticator,
    AuthServicer,
    LoginThrottle,
    Passwords,
    SessionManager,
    TokenIssuer,
)
from cynode.orchestrator.config import Settings
from cynode.orchestrator.events import EventBus
from cynode.orchestrator.gateway import TaskBook, TaskServicer
from cynode.orchestrator.grpc_server import Registration, build_grpc_server
from cynode.orchestrator.health import (
    InferenceReady,
    Readiness,
    health_routes,
    store_inference_ready,
)
from cynode.orchestrator.metrics import GatewayMetrics
from cynode.orchestrator.rest import build_rest_app
from cynode.orchestrator.store import session_factory

log = logging.getLogger(__name__)

AUTH_SERVICE = "cynode.gateway.v1.AuthService"
TASK_SERVICE = "cynode.gateway.v1.TaskService"
# gRPC's default 4 MiB would refuse tasks the REST port accepts (attachments).
GRPC_MAX_MESSAGE_BYTES = 11 * 1024 * 1024
SHUTDOWN_GRACE_SECONDS = 5.0


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
    extra_services: dict[str, object] = field(default_factory=dict)

    def services(self) -> dict[str, object]:
        return {
            AUTH_SERVICE: AuthServicer(self.sessions, self.authenticator),
            TASK_SERVICE: TaskServicer(self.book, self.authenticator),
            **self.extra_services,
        }

    def rest_app(self, services: Mapping[str, object] | None = None) -> ASGIApp:
        app = build_rest_app(
            services if services is not None else self.services(),
            extra_routes=[*health_routes(self.readiness), self.metrics.route()],
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
        book=TaskBook(factory, bus),
        readiness=Readiness(
            engine,
            inference_ready or store_inference_ready(factory),
            require_inference=settings.require_inference,
        ),
        metrics=GatewayMetrics(factory),
    )


@dataclass
class ControlPlaneParts:
    """What the control plane adds to a running orchestrator."""

    gateway_services: Mapping[str, object] = field(default_factory=dict)
    inference_ready: InferenceReady | None = None
    start: Callable[[], Awaitable[None]] | None = None
    stop: Callable[[], Awaitable[None]] | None = None


ControlPlaneHook = Callable[[Gateway], Awaitable[ControlPlaneParts]]


def control_plane_hook() -> ControlPlaneHook | None:
    """The control plane (ports 12082/12083) plugs in here; `serve` calls it.

    Until it is wired, the orchestrator serves the user gateway alone.
    """
    return None


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(512)
    sock.setblocking(False)
    return sock


class QuietServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the orchestrator owns SIGTERM/SIGINT."""

    def install_signal_handlers(self) -> None:  # uvicorn < 0.29
        pass

    def capture_signals(self) -> Any:
        import contextlib

        return contextlib.nullcontext()


def grpc_registrations(services: Mapping[str, object]) -> list[Registration]:
    """(add_XServicer_to_server, servicer) pairs, found from each service's proto file."""
    pool = descriptor_pool.Default()
    registrations: list[Registration] = []
    for name, servicer in services.items():
        service = pool.FindServiceByName(name)
        module_name = service.file.name.removesuffix(".proto").replace("/", ".") + "_pb2_grpc"
        module = importlib.import_module(module_name)
        registrations.append((getattr(module, f"add_{service.name}Servicer_to_server"), servicer))
    return registrations


def build_grpc(services: Mapping[str, object]) -> grpc.aio.Server:
    """The gateway's gRPC server, with health and reflection."""
    return build_grpc_server(
        grpc_registrations(services),
        service_names=list(services),
        max_message_bytes=GRPC_MAX_MESSAGE_BYTES,
    )


class Orchestrator:
    """The gateway's listeners (and the control plane's, through the hook)."""

    def __init__(self, gateway: Gateway, control_plane: ControlPlaneHook | None = None) -> None:
        self.gateway = gateway
        self._hook = control_plane
        self._parts = ControlPlaneParts()
        self._grpc: grpc.aio.Server | None = None
        self._uvicorn: QuietServer | None = None
        self._uvicorn_task: asyncio.Task[None] | None = None
        self.rest_port = 0
        self.grpc_port = 0

    async def start(self) -> None:
        settings = self.gateway.settings
        if self._hook is not None:
            self._parts = await self._hook(self.gateway)
            self.gateway.extra_services.update(self._parts.gateway_services)
            if self._parts.inference_ready is not None:
                self.gateway.readiness.inference_ready = self._parts.inference_ready
        services = self.gateway.services()

        self._grpc = build_grpc(services)
        address = f"{_host_for_grpc(settings.host)}:{settings.gateway_grpc_port}"
        if settings.tls_enabled:
            assert settings.tls_cert is not None and settings.tls_key is not None
            creds = grpc.ssl_server_credentials(
                [(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())]
            )
            self.grpc_port = self._grpc.add_secure_port(address, creds)
        else:
            self.grpc_port = self._grpc.add_insecure_port(address)
        await self._grpc.start()

        sock = bind_socket(settings.host, settings.gateway_rest_port)
        self.rest_port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.gateway.rest_app(services),
            lifespan="off",
            log_config=None,
            access_log=False,
            ssl_certfile=str(settings.tls_cert) if settings.tls_enabled else None,
            ssl_keyfile=str(settings.tls_key) if settings.tls_enabled else None,
            timeout_graceful_shutdown=int(SHUTDOWN_GRACE_SECONDS),
        )
        self._uvicorn = QuietServer(config)
        self._uvicorn_task = asyncio.create_task(self._uvicorn.serve(sockets=[sock]))
        while not self._uvicorn.started:
            if self._uvicorn_task.done():
                self._uvicorn_task.result()
                raise RuntimeError("the REST listener stopped during start-up")
            await asyncio.sleep(0.01)
        if self._parts.start is not None:
            await self._parts.start()
        log.info(
            "user gateway listening: REST %s:%d, gRPC %s:%d",
            settings.host,
            self.rest_port,
            settings.host,
            self.grpc_port,
        )

    async def stop(self) -> None:
        if self._parts.stop is not None:
            await self._parts.stop()
        if self._uvicorn is not None and self._uvicorn_task is not None:
            self._uvicorn.should_exit = True
            await self._uvicorn_task
        if self._grpc is not None:
            await self._grpc.stop(SHUTDOWN_GRACE_SECONDS)


def _host_for_grpc(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
