"""A REST port and a gRPC port serving one set of servicers, in this event loop.

The user gateway (12080/12081) and the control plane (12082/12083) are each one
`ServicePorts`: the REST side is the shim over the same servicer objects the gRPC side
registers, so both doors always answer alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import socket
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import uvicorn
from google.protobuf import descriptor_pool
from starlette.types import ASGIApp

from cynode.orchestrator.grpc_server import Registration, build_grpc_server

SHUTDOWN_GRACE_SECONDS = 5.0


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket whose accepted connections have TCP_NODELAY.

    The stdlib loop sets TCP_NODELAY on an accepted connection only when the listening
    socket's `proto` is IPPROTO_TCP (`socket.socket(family, SOCK_STREAM)` leaves it 0),
    and uvicorn writes a response's head and body separately: with Nagle on, the body
    waits for the client's delayed ACK, about 40 ms per keep-alive request. Linux copies
    TCP_NODELAY from the listener to each accepted socket, so it is set here as well, for
    any loop (SPEC § Listeners)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(512)
    sock.setblocking(False)
    return sock


class QuietServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the orchestrator owns SIGTERM/SIGINT."""

    def install_signal_handlers(self) -> None:  # uvicorn < 0.29
        pass

    def capture_signals(self) -> Any:
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


def grpc_address(host: str, port: int) -> str:
    bracketed = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"{bracketed}:{port}"


@dataclass(frozen=True)
class Tls:
    """Server certificate and key; with `client_ca`, clients must present a certificate
    that CA issued (mTLS), on gRPC and REST alike."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def grpc_credentials(self) -> grpc.ServerCredentials:
        pair = [(self.key.read_bytes(), self.cert.read_bytes())]
        if self.client_ca is None:
            return grpc.ssl_server_credentials(pair)
        return grpc.ssl_server_credentials(
            pair, root_certificates=self.client_ca.read_bytes(), require_client_auth=True
        )

    def uvicorn_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"ssl_certfile": str(self.cert), "ssl_keyfile": str(self.key)}
        if self.client_ca is not None:
            options.update(ssl_ca_certs=str(self.client_ca), ssl_cert_reqs=ssl.CERT_REQUIRED)
        return options


class ServicePorts:
    """Serves `services` over gRPC on `grpc_port` and REST (`rest_app`) on `rest_port`.
    Port 0 picks a free port; the bound ports are in `.grpc_port` / `.rest_port`."""

    def __init__(
        self,
        services: Mapping[str, object],
        rest_app: ASGIApp,
        *,
        host: str,
        rest_port: int,
        grpc_port: int,
        max_message_bytes: int,
        tls: Tls | None = None,
        interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = (),
    ) -> None:
        self._services = services
        self._interceptors = interceptors
        self._rest_app = rest_app
        self._host = host
        self._want_rest_port = rest_port
        self._want_grpc_port = grpc_port
        self._max_message_bytes = max_message_bytes
        self._tls = tls
        self._grpc: grpc.aio.Server | None = None
        self._uvicorn: QuietServer | None = None
        self._uvicorn_task: asyncio.Task[None] | None = None
        self.rest_port = 0
        self.grpc_port = 0

    async def start(self) -> None:
        self._grpc = build_grpc_server(
            grpc_registrations(self._services),
            service_names=list(self._services),
            max_message_bytes=self._max_message_bytes,
            interceptors=self._interceptors,
        )
        address = grpc_address(self._host, self._want_grpc_port)
        if self._tls is not None:
            self.grpc_port = self._grpc.add_secure_port(address, self._tls.grpc_credentials())
        else:
            self.grpc_port = self._grpc.add_insecure_port(address)
        await self._grpc.start()

        sock = bind_socket(self._host, self._want_rest_port)
        self.rest_port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._rest_app,
            # httptools (C, llhttp) rather than h11 (pure Python): SPEC §1.5.
            http="httptools",
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=int(SHUTDOWN_GRACE_SECONDS),
            **(self._tls.uvicorn_options() if self._tls else {}),
        )
        self._uvicorn = QuietServer(config)
        self._uvicorn_task = asyncio.create_task(self._uvicorn.serve(sockets=[sock]))
        while not self._uvicorn.started:
            if self._uvicorn_task.done():
                self._uvicorn_task.result()
                raise RuntimeError("the REST listener stopped during start-up")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._uvicorn is not None and self._uvicorn_task is not None:
            self._uvicorn.should_exit = True
            await self._uvicorn_task
        if self._grpc is not None:
            await self._grpc.stop(SHUTDOWN_GRACE_SECONDS)
