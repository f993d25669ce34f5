"""The whole inference path with real parts: the development model (its own process,
the real SmolLM2), a real orchestrator (gateway + control plane, in this process, on
127.0.0.1:0) and a node's side of it (the inference relay, i.e. the proxy's policy,
and the InferenceLink client) holding a real gRPC stream with a real node JWT."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from cynode.controlplane.v1 import nodes_pb2, nodes_pb2_grpc
from cynode.node.backoff import Backoff
from cynode.node.inference.link import InferenceLink
from cynode.node.inference.relay import InferenceRelay
from cynode.orchestrator.app import Orchestrator, serve_control_plane
from cynode.orchestrator.auth import create_user
from cynode.orchestrator.store import make_engine, upgrade
from cynode.testing.launchers import DevModel
from tests.orchestrator.gatewaykit import PASSWORD, make_gateway, unique

MODEL = "smollm2:135m"
PSK = "psk-inference-tests"


@pytest.fixture(scope="session")
def dev_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevModel]:
    model = DevModel(tmp_path_factory.mktemp("chat-model") / "model.log")
    model.start()
    yield model
    model.stop()


class NodeAuth:
    """A node's JWT from a real RegisterNode, as the link client asks for it."""

    def __init__(self, channel: grpc.aio.Channel, slug: str) -> None:
        self._stub = nodes_pb2_grpc.NodeServiceStub(channel)  # type: ignore[no-untyped-call]
        self.slug = slug
        self._token = ""
        self.node_id = ""

    async def metadata(self) -> tuple[tuple[str, str], ...]:
        if not self._token:
            request = nodes_pb2.RegisterNodeRequest(psk=PSK)
            request.capability.node.node_slug = self.slug
            response = await self._stub.RegisterNode(request)
            self._token, self.node_id = response.auth.node_jwt, response.node_id
        return (("authorization", f"Bearer {self._token}"),)

    def invalidate(self) -> None:
        self._token = ""


class Tap:
    """A pass-through in front of the model that notes when the model's last frame of
    an /api/chat answer (`"done": true`) passed it: the upstream's view of "finished"."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.done_at: list[float] = []
        self.bodies: list[bytes] = []
        # While clear, requests are held before they reach the model (a node that has
        # taken a call and not answered yet).
        self.open = asyncio.Event()
        self.open.set()
        self.held = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> Tap:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._forward)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        self.open.set()  # held requests finish, or cleanup would wait for them
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.bodies.append(body)
        if not self.open.is_set():
            self.held += 1
            await self.open.wait()
        async with (
            httpx.AsyncClient(base_url=self.upstream, timeout=120) as client,
            client.stream(request.method, request.path, content=body) as upstream,
        ):
            response = web.StreamResponse(status=upstream.status_code)
            response.content_type = upstream.headers.get("content-type", "application/json")
            await response.prepare(request)
            async for line in upstream.aiter_lines():
                if '"done":true' in line.replace(" ", ""):
                    self.done_at.append(time.perf_counter())
                await response.write(line.encode() + b"\n")
            await response.write_eof()
            return response


@dataclass
class FakeNode:
    """One node's inference side: its relay and its link, each its own task."""

    slug: str
    link: InferenceLink
    relay: InferenceRelay
    task: asyncio.Task[None]
    channel: grpc.aio.Channel

    async def kill(self) -> None:
        """Gone at once, as when the process dies: the stream is cut, not closed."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task
        await self.channel.close(None)
        await self.relay.close()
        # Under /tmp, not pytest's tmp_path: the socket's path must stay short.
        shutil.rmtree(self.relay.directory, ignore_errors=True)


@dataclass
class Door:
    orchestrator: Orchestrator
    model: DevModel
    base: Path
    nodes: list[FakeNode] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.orchestrator.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.orchestrator.grpc_port}"

    async def add_node(
        self,
        slug: str | None = None,
        *,
        models: tuple[str, ...] = (MODEL,),
        allowed: tuple[str, ...] = (),
        concurrency: int = 1,
        upstream: str | None = None,
    ) -> FakeNode:
        slug = slug or unique("node")
        cp = self.orchestrator.control_ports
        assert cp is not None
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{cp.grpc_port}")
        relay = InferenceRelay(
            Path(tempfile.mkdtemp(prefix="cyn-rl-", dir="/tmp")), upstream or self.model.url
        )
        await relay.start()
        caps = nodes_pb2.InferenceCapability(
            supported=True, running=True, models=list(models), max_concurrency=concurrency
        )
        link = InferenceLink(
            node_slug=slug,
            channel=channel,
            auth=NodeAuth(channel, slug),
            relay=lambda: relay,
            capability=lambda: caps,
            allowed_models=lambda: allowed,
            backoff=Backoff(0.1, 0.5),
        )
        node = FakeNode(slug, link, relay, asyncio.create_task(link.run()), channel)
        self.nodes.append(node)
        await asyncio.wait_for(link.connected.wait(), 30)
        return node

    async def login(self, *, is_admin: bool = False) -> dict[str, Any]:
        """A new user, logged in: the login answer (access_token, refresh_token) and
        its `handle`."""
        gw = self.orchestrator.gateway
        handle = unique("chat")
        await create_user(gw.factory, gw.passwords, handle, PASSWORD, is_admin=is_admin)
        async with httpx.AsyncClient(base_url=self.url) as http:
            resp = await http.post("/v1/auth/login", json={"handle": handle, "password": PASSWORD})
        assert resp.status_code == 200, resp.text
        return {**resp.json(), "handle": handle}

    async def token(self, *, is_admin: bool = False) -> str:
        return str((await self.login(is_admin=is_admin))["access_token"])


@contextlib.asynccontextmanager
async def running_door(
    model: DevModel, tmp: Path, engine: AsyncEngine | None = None, **settings: Any
) -> AsyncIterator[Door]:
    own = engine is None
    if engine is None:
        engine = make_engine(f"sqlite:///{tmp / 'door.db'}")
        await upgrade(engine)
    gw = make_gateway(
        engine,
        tmp,
        gateway_rest_port=0,
        gateway_grpc_port=0,
        control_rest_port=0,
        control_grpc_port=0,
        node_psk=PSK,
        **settings,
    )
    orch = Orchestrator(gw, serve_control_plane)
    await orch.start()
    door = Door(orch, model, tmp)
    try:
        yield door
    finally:
        for node in door.nodes:
            await node.link.stop()
            await node.kill()
        await orch.stop()
        if own:
            await engine.dispose()
