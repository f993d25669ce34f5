"""Shared pieces for the gateway tests: a Gateway on the session's migrated engine
(both backends), a real gRPC server on 127.0.0.1:0 with generated stubs, and users."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import uvicorn
from argon2 import PasswordHasher
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp
from ulid import ULID

from cynode.gateway.v1 import (
    audit_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    tasks_pb2_grpc,
    users_pb2_grpc,
)
from cynode.orchestrator.app import (
    GRPC_MAX_MESSAGE_BYTES,
    Gateway,
    build_gateway,
    grpc_interceptors,
)
from cynode.orchestrator.auth import Passwords, create_user
from cynode.orchestrator.config import Settings
from cynode.orchestrator.events import EventBus
from cynode.orchestrator.listeners import QuietServer, bind_socket

# Argon2id with small costs: the same code paths, milliseconds instead of 100 ms.
FAST_PASSWORDS = Passwords(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
PASSWORD = "correct horse battery"


def test_settings(tmp: Path, **kw: Any) -> Settings:
    base: dict[str, Any] = {
        "data_dir": tmp,
        "jwt_secret": "test-secret-" + "x" * 32,
        "login_max_failures": 10_000,
    }
    base.update(kw)
    return Settings(**base)


def make_gateway(engine: AsyncEngine, tmp: Path, **kw: Any) -> Gateway:
    return build_gateway(test_settings(tmp, **kw), engine, bus=EventBus(), passwords=FAST_PASSWORDS)


def unique(prefix: str = "u") -> str:
    return f"{prefix}{str(ULID()).lower()[-12:]}"


@dataclass
class Served:
    gateway: Gateway
    server: grpc.aio.Server
    channel: grpc.aio.Channel
    auth: auth_pb2_grpc.AuthServiceStub
    tasks: tasks_pb2_grpc.TaskServiceStub


async def serve_grpc(gateway: Gateway) -> Served:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", GRPC_MAX_MESSAGE_BYTES),
        ],
        interceptors=grpc_interceptors(),
    )
    services = gateway.services()
    auth_pb2_grpc.add_AuthServiceServicer_to_server(  # type: ignore[no-untyped-call]
        services["cynode.gateway.v1.AuthService"], server
    )
    tasks_pb2_grpc.add_TaskServiceServicer_to_server(  # type: ignore[no-untyped-call]
        services["cynode.gateway.v1.TaskService"], server
    )
    users_pb2_grpc.add_UserServiceServicer_to_server(  # type: ignore[no-untyped-call]
        services["cynode.gateway.v1.UserService"], server
    )
    audit_pb2_grpc.add_AuditServiceServicer_to_server(  # type: ignore[no-untyped-call]
        services["cynode.gateway.v1.AuditService"], server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{port}",
        options=[("grpc.max_send_message_length", GRPC_MAX_MESSAGE_BYTES)],
    )
    return Served(
        gateway,
        server,
        channel,
        auth_pb2_grpc.AuthServiceStub(channel),  # type: ignore[no-untyped-call]
        tasks_pb2_grpc.TaskServiceStub(channel),  # type: ignore[no-untyped-call]
    )


async def user_token(
    served: Served, *, is_admin: bool = False
) -> tuple[str, auth_pb2.LoginResponse]:
    handle = unique("adm" if is_admin else "usr")
    await create_user(
        served.gateway.factory, served.gateway.passwords, handle, PASSWORD, is_admin=is_admin
    )
    resp = await served.auth.Login(auth_pb2.LoginRequest(handle=handle, password=PASSWORD))
    return handle, resp


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture(scope="session")
async def gateway(db_engine: AsyncEngine, tmp_path_factory: pytest.TempPathFactory) -> Gateway:
    return make_gateway(db_engine, tmp_path_factory.mktemp("gw"))


@pytest.fixture(scope="session")
async def served(gateway: Gateway) -> AsyncIterator[Served]:
    s = await serve_grpc(gateway)
    yield s
    await s.channel.close(None)
    await s.server.stop(None)


def trailers(metadata: Any) -> dict[str, str]:
    """Trailing metadata as a dict (grpc's Metadata type is loosely typed)."""
    return {str(k): str(v) for k, v in (metadata or ())}


@asynccontextmanager
async def rest_server(app: ASGIApp, *, access_log: bool = False) -> AsyncIterator[str]:
    """A real uvicorn on 127.0.0.1:<free port> in this event loop; yields its base URL."""
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = QuietServer(
        uvicorn.Config(app, lifespan="off", log_config=None, access_log=access_log)
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        assert not task.done(), task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture(scope="session")
async def rest_url(gateway: Gateway) -> AsyncIterator[str]:
    async with rest_server(gateway.rest_app()) as url:
        yield url


@pytest.fixture
async def http(rest_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=rest_url, timeout=30) as client:
        yield client


async def rest_login(
    http: httpx.AsyncClient, gateway: Gateway, *, is_admin: bool = False
) -> dict[str, str]:
    handle = unique("rest")
    await create_user(gateway.factory, gateway.passwords, handle, PASSWORD, is_admin=is_admin)
    resp = await http.post("/v1/auth/login", json={"handle": handle, "password": PASSWORD})
    assert resp.status_code == 200, resp.text
    return {"Authorization": f"Bearer {resp.json()['access_token']}"}
