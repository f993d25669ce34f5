"""A control plane on a real gRPC port, and a fast way to queue jobs, for tests and
benchmarks that drive SimNodes against it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from cynode.orchestrator import lifecycle
from cynode.orchestrator.app import GRPC_MAX_MESSAGE_BYTES
from cynode.orchestrator.artifacts.blobs import FsBlobStore
from cynode.orchestrator.auth.admins import Authenticate
from cynode.orchestrator.controlplane import (
    ControlPlane,
    ControlPlaneSettings,
    build_control_plane,
)
from cynode.orchestrator.events import JOBS as JOBS_TOPIC
from cynode.orchestrator.events import EventBus
from cynode.orchestrator.grpc_server import server_options
from cynode.orchestrator.store import User, new_id, session_factory, transaction, utcnow


class ControlPlaneServer:
    """build_control_plane + a grpc.aio server on 127.0.0.1. `port=0` picks one; a
    restart binds the same port again so connected nodes find it."""

    def __init__(
        self,
        engine: AsyncEngine,
        settings: ControlPlaneSettings,
        *,
        port: int = 0,
        authenticate: Authenticate | None = None,
        bus: EventBus | None = None,
        blobs: FsBlobStore | None = None,
    ) -> None:
        self.engine = engine
        self.blobs = blobs
        self.settings = settings
        self.port = port
        self.authenticate = authenticate
        self.bus = bus or EventBus()
        self.plane: ControlPlane | None = None
        self.server: grpc.aio.Server | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def cp(self) -> ControlPlane:
        assert self.plane is not None, "not started"
        return self.plane

    async def start(self) -> ControlPlaneServer:
        self.plane = build_control_plane(
            self.engine, self.bus, self.settings, authenticate=self.authenticate, blobs=self.blobs
        )
        self.server = grpc.aio.server(options=server_options(GRPC_MAX_MESSAGE_BYTES))
        self.plane.add_to_server(self.server)
        self.plane.add_gateway_to_server(self.server)
        self.port = self.server.add_insecure_port(self.target)
        await self.plane.start()
        await self.server.start()
        return self

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=None)
            self.server = None
        if self.plane is not None:
            await self.plane.stop()
            self.plane = None


def settings_for_tests(**overrides: Any) -> ControlPlaneSettings:
    base = ControlPlaneSettings(
        psk="test-psk-0123456789",
        jwt_secret="test-secret-0123456789abcdef-0123456789",
        lease_seconds=2,
        heartbeat_seconds=1,
        sweep_seconds=0.3,
    )
    return replace(base, **overrides)


async def make_user(engine: AsyncEngine, handle: str | None = None) -> str:
    async with transaction(session_factory(engine)) as s:
        user = User(handle=handle or f"u{new_id().lower()}", password_hash="x")
        s.add(user)
    return user.id


async def enqueue_jobs(
    engine: AsyncEngine,
    user_id: str | Sequence[str],
    count: int,
    *,
    input_mode: str = "commands",
    needs_inference: bool = False,
    bus: EventBus | None = None,
) -> list[tuple[str, str]]:
    """Creates `count` tasks, each with its first job queued, in one transaction the way
    the gateway does; returns (task_id, job_id) pairs. Given several users, the tasks
    go to them in turn."""
    owners = [user_id] if isinstance(user_id, str) else list(user_id)
    now = utcnow()
    tasks: list[dict[str, Any]] = []
    jobs: list[dict[str, Any]] = []
    pairs: list[tuple[str, str]] = []
    for i in range(count):
        task_id, job_id = new_id(), new_id()
        pairs.append((task_id, job_id))
        tasks.append(
            {
                "id": task_id,
                "user_id": owners[i % len(owners)],
                "name": None,
                "input_mode": input_mode,
                "prompt": "hello" if input_mode == "prompt" else None,
                "script": "echo hi" if input_mode == "script" else None,
                "commands": ["echo hi"] if input_mode == "commands" else None,
                "use_inference": needs_inference,
                "timeout_seconds": 0,
                "image": None,
                "reason": None,
                "created_at": now,
                "updated_at": now,
            }
        )
        jobs.append(
            {
                "id": job_id,
                "task_id": task_id,
                "needs_inference": needs_inference,
                "attempt": 0,
                "cancel_requested": False,
                "stdout": b"",
                "stderr": b"",
                "stdout_truncated": False,
                "stderr_truncated": False,
                "created_at": now,
                "updated_at": now,
            }
        )
    async with engine.begin() as conn:
        await lifecycle.enqueue_many(conn, tasks, jobs)
    if bus is not None:
        bus.publish(JOBS_TOPIC)
    return pairs
