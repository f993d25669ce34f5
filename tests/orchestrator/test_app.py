"""The running orchestrator: both gateway listeners on free ports, the control-plane
hook, gRPC health, and shutdown."""

from __future__ import annotations

from pathlib import Path

import grpc
import httpx
import pytest
import sqlalchemy as sa
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from cynode.controlplane.v1 import nodes_pb2, nodes_pb2_grpc
from cynode.gateway.v1 import auth_pb2, auth_pb2_grpc
from cynode.orchestrator.app import (
    ControlPlaneParts,
    Gateway,
    Orchestrator,
    control_plane_hook,
    serve_control_plane,
)
from cynode.orchestrator.auth import create_user
from cynode.orchestrator.config import SettingsError
from cynode.orchestrator.store import make_engine, upgrade
from tests.orchestrator.gatewaykit import PASSWORD, make_gateway, unique


async def test_serves_rest_and_grpc_and_runs_the_control_plane_hook(
    db_engine: AsyncEngine, tmp_path: Path
) -> None:
    calls: list[str] = []

    async def ready() -> bool:
        return True

    async def start() -> None:
        calls.append("start")

    async def stop() -> None:
        calls.append("stop")

    async def hook(gw: Gateway) -> ControlPlaneParts:
        calls.append("hook")
        return ControlPlaneParts(inference_ready=ready, start=start, stop=stop)

    gw = make_gateway(db_engine, tmp_path, gateway_rest_port=0, gateway_grpc_port=0)
    handle = unique("app")
    await create_user(gw.factory, gw.passwords, handle, PASSWORD)
    orch = Orchestrator(gw, hook)
    await orch.start()
    try:
        assert orch.rest_port and orch.grpc_port
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{orch.rest_port}") as http:
            assert (await http.get("/readyz")).status_code == 200
            resp = await http.post("/v1/auth/login", json={"handle": handle, "password": PASSWORD})
            assert resp.status_code == 200
        async with grpc.aio.insecure_channel(f"127.0.0.1:{orch.grpc_port}") as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)  # type: ignore[no-untyped-call]
            pair = await stub.Login(auth_pb2.LoginRequest(handle=handle, password=PASSWORD))
            assert pair.access_token
            health = health_pb2_grpc.HealthStub(channel)
            status = await health.Check(
                health_pb2.HealthCheckRequest(service="cynode.gateway.v1.TaskService")
            )
            assert status.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await orch.stop()
    assert calls == ["hook", "start", "stop"]
    async with httpx.AsyncClient() as http:
        try:
            await http.get(f"http://127.0.0.1:{orch.rest_port}/healthz")
            refused = False
        except httpx.ConnectError:
            refused = True
    assert refused


def test_control_plane_hook_is_the_real_control_plane() -> None:
    assert control_plane_hook() is serve_control_plane


async def test_serve_control_plane_opens_its_ports_and_feeds_readiness(tmp_path: Path) -> None:
    # A store of its own: readiness must not see nodes other tests left online.
    engine = make_engine(f"sqlite:///{tmp_path / 'own.db'}")
    await upgrade(engine)
    psk = "psk-" + unique()
    gw = make_gateway(
        engine,
        tmp_path,
        gateway_rest_port=0,
        gateway_grpc_port=0,
        control_rest_port=0,
        control_grpc_port=0,
        node_psk=psk,
    )
    orch = Orchestrator(gw, serve_control_plane)
    await orch.start()
    try:
        cp = orch.control_ports
        assert cp is not None and cp.rest_port and cp.grpc_port
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{cp.rest_port}") as http:
            refused = await http.post("/v1/nodes/register", json={"psk": "wrong"})
            assert refused.status_code == 401
            assert refused.headers["content-type"].startswith("application/problem+json")
            doc = (await http.get("/openapi.json")).json()
            assert "/v1/nodes/register" in doc["paths"]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{orch.rest_port}") as http:
            # No inference-capable node is connected: the gateway says so.
            ready = await http.get("/readyz")
            assert ready.status_code == 503 and "inference" in ready.text
            assert "/v1/nodes" in (await http.get("/openapi.json")).json()["paths"]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{cp.grpc_port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            status = await health.Check(
                health_pb2.HealthCheckRequest(service="cynode.controlplane.v1.DispatchService")
            )
            assert status.status == health_pb2.HealthCheckResponse.SERVING
            # A store failure reaches a node as INTERNAL "internal error"; what the
            # database said (table names, values) stays in the log.
            async with engine.begin() as conn:
                await conn.execute(sa.text("ALTER TABLE nodes RENAME TO nodes_gone"))
            nodes = nodes_pb2_grpc.NodeServiceStub(channel)  # type: ignore[no-untyped-call]
            request = nodes_pb2.RegisterNodeRequest(psk=psk)
            request.capability.node.node_slug = "broken-store"
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await nodes.RegisterNode(request)
            assert err.value.code() == grpc.StatusCode.INTERNAL
            assert err.value.details() == "internal error"
    finally:
        await orch.stop()
        await engine.dispose()


async def test_serve_control_plane_refuses_to_start_without_a_psk(
    db_engine: AsyncEngine, tmp_path: Path
) -> None:
    gw = make_gateway(db_engine, tmp_path, gateway_rest_port=0, gateway_grpc_port=0)
    with pytest.raises(SettingsError, match="NODE_PSK"):
        await serve_control_plane(gw)
