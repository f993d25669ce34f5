"""Every REST listener we run sets TCP_NODELAY on the connections it accepts (SPEC §1.5).

Without it, Nagle holds the second write of each response (uvicorn writes head and body
separately) until the client's delayed ACK: about 40 ms per keep-alive request. Each
test starts one listener kind in this process, makes one request, and reads the option
off the server's own end of the connection.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cynode.node.devinference import start_dev_inference
from cynode.node.metrics import NodeMetrics
from cynode.node.readiness import Readiness
from cynode.node.worker_api import WorkerApiServer, build_app
from cynode.orchestrator.app import Orchestrator, serve_control_plane
from cynode.orchestrator.store import make_engine, upgrade
from cynode.proxy import ProxyConfig, parse_listen, parse_upstream, start_proxy
from tests.fixtures.sockets import accepted_nodelay, http_get
from tests.orchestrator.gatewaykit import make_gateway, unique

HOST = "127.0.0.1"


async def test_the_check_sees_a_connection_without_nodelay() -> None:
    # A listener made the way the gateway's used to be: proto 0, stdlib loop.
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((HOST, 0))
    server = await asyncio.start_server(answer, sock=sock)
    async with server:
        assert await accepted_nodelay(HOST, sock.getsockname()[1], http_get("/")) is False


@pytest.fixture
async def orchestrator(tmp_path: Path) -> AsyncIterator[Orchestrator]:
    engine = make_engine(f"sqlite:///{tmp_path / 'own.db'}")
    await upgrade(engine)
    gw = make_gateway(
        engine,
        tmp_path,
        gateway_rest_port=0,
        gateway_grpc_port=0,
        control_rest_port=0,
        control_grpc_port=0,
        node_psk="psk-" + unique(),
    )
    orch = Orchestrator(gw, serve_control_plane)
    await orch.start()
    try:
        yield orch
    finally:
        await orch.stop()
        await engine.dispose()


async def test_gateway_and_control_plane_rest(orchestrator: Orchestrator) -> None:
    control = orchestrator.control_ports
    assert control is not None
    assert await accepted_nodelay(HOST, orchestrator.rest_port, http_get("/healthz"))
    assert await accepted_nodelay(HOST, control.rest_port, http_get("/healthz"))


async def test_worker_api() -> None:
    server = WorkerApiServer(build_app(Readiness(), NodeMetrics()), HOST, 0)
    await server.start()
    try:
        assert await accepted_nodelay(HOST, server.port, http_get("/healthz"))
    finally:
        await server.stop()


async def test_proxy_sidecar_and_relay() -> None:
    # The sidecar and the node's relay are both start_proxy; only the sidecar listens on
    # TCP (the relay's door is a Unix socket, where Nagle does not apply).
    config = ProxyConfig(
        upstream=parse_upstream("http://127.0.0.1:9"),
        listen=(parse_listen(f"{HOST}:0"),),
        shutdown_timeout=0.5,
    )
    proxy = await start_proxy(config)
    try:
        assert await accepted_nodelay(HOST, proxy.tcp_ports[0], http_get("/api/tags"))
    finally:
        await proxy.close()


async def test_dev_model_server() -> None:
    handle = await start_dev_inference(HOST, 0, n_ctx=256, default_num_predict=4)
    try:
        assert await accepted_nodelay(HOST, handle.port, http_get("/api/tags"))
    finally:
        await handle.close()
