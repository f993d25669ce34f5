"""Two orchestrator replicas on one Postgres schema; the admin fleet view."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from cynode.gateway.v1 import nodes_pb2, nodes_pb2_grpc
from cynode.orchestrator.controlplane import inference_path_available, list_nodes
from cynode.orchestrator.events import EventBus, task_topic
from cynode.orchestrator.simnode import SimNode
from cynode.orchestrator.simnode.harness import (
    ControlPlaneServer,
    enqueue_jobs,
    make_user,
    settings_for_tests,
)
from cynode.orchestrator.store.tables import ATTEMPTS, JOBS
from cynode.testing import until

PSK = "test-psk-0123456789"


async def test_two_replicas_dispatch_each_job_exactly_once(pg_engine: AsyncEngine) -> None:
    one = await ControlPlaneServer(pg_engine, settings_for_tests(claim_batch=16)).start()
    two = await ControlPlaneServer(pg_engine, settings_for_tests(claim_batch=16)).start()
    nodes = [
        SimNode((one if i % 2 else two).target, PSK, f"r{i}", slots=4, stream_output=False)
        for i in range(8)
    ]
    for node in nodes:
        await node.start()
    user = await make_user(pg_engine)
    # Queued through replica one's bus only: replica two wakes by NOTIFY or its sweep.
    pairs = await enqueue_jobs(pg_engine, user, 200, bus=one.bus)

    async def done() -> bool:
        async with pg_engine.connect() as conn:
            rows = await conn.execute(sa.select(JOBS.c.status))
            return Counter(r.status for r in rows)["completed"] == 200

    # A result stored by replica two still wakes a watcher on replica one.
    async with one.bus.subscribe(task_topic(pairs[-1][0])) as updates:
        await until(done, timeout=60, what="200 completed")
        got_update = not updates.empty()
    seen = Counter(s.job_id for n in nodes for s in n.assignments)
    assert len(seen) == 200 and set(seen.values()) == {1}
    async with pg_engine.connect() as conn:
        attempts = Counter(r.job_id for r in await conn.execute(sa.select(ATTEMPTS.c.job_id)))
    assert len(attempts) == 200 and set(attempts.values()) == {1}
    by_replica = Counter(n.target for n in nodes for _ in n.assignments)
    assert set(by_replica) == {one.target, two.target}  # both replicas dispatched
    assert got_update
    for node in nodes:
        await node.stop()
    await one.stop()
    await two.stop()


@dataclass
class FakePrincipal:
    """Stands in for the gateway's Principal; only is_admin matters here."""

    is_admin: bool


def _authenticate(context: grpc.aio.ServicerContext[Any, Any]) -> FakePrincipal:
    md = dict(context.invocation_metadata() or ())
    return FakePrincipal(is_admin=md.get("authorization") == "Bearer admin")


async def _async_authenticate(context: grpc.aio.ServicerContext[Any, Any]) -> FakePrincipal:
    return _authenticate(context)


@pytest.mark.parametrize("auth", [_authenticate, _async_authenticate])
async def test_list_nodes_admin_only(sqlite_engine: AsyncEngine, auth: Any) -> None:
    srv = await ControlPlaneServer(sqlite_engine, settings_for_tests(), authenticate=auth).start()
    assert not await srv.cp.inference_path_available()
    busy = SimNode(srv.target, PSK, "busy", slots=2, inference=True, runtime=_forever)
    idle = SimNode(srv.target, PSK, "idle", slots=1)
    await busy.start()
    await idle.start()
    await idle.stop()
    user = await make_user(sqlite_engine)
    await enqueue_jobs(sqlite_engine, user, 1, needs_inference=True, bus=srv.bus)
    await until(lambda: len(busy.running) == 1, what="running")
    assert await srv.cp.inference_path_available()
    channel = grpc.aio.insecure_channel(srv.target)
    stub = nodes_pb2_grpc.NodeAdminServiceStub(channel)  # type: ignore[no-untyped-call]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListNodes(
            nodes_pb2.ListNodesRequest(), metadata=(("authorization", "Bearer u"),)
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED

    async def idle_offline() -> bool:
        return {n.node_slug: n.status for n in await list_nodes(sqlite_engine)}["idle"] == "offline"

    await until(idle_offline, what="idle offline")
    resp = await stub.ListNodes(
        nodes_pb2.ListNodesRequest(), metadata=(("authorization", "Bearer admin"),)
    )
    got = {n.node_slug: n for n in resp.nodes}
    assert set(got) == {"busy", "idle"}
    assert got["busy"].status == "online" and got["busy"].inference_supported
    assert got["busy"].max_concurrency == 2 and got["busy"].running_jobs == 1
    assert got["busy"].config_status == "applied" and got["busy"].config_version
    assert got["busy"].last_heartbeat_at.seconds > 0
    assert got["idle"].status == "offline" and got["idle"].running_jobs == 0
    # A replica that died leaves "online" behind; a stale heartbeat reads as offline.
    stale = {n.node_slug: n.status for n in await list_nodes(sqlite_engine, timedelta(0))}
    assert stale == {"busy": "offline", "idle": "offline"}
    assert not await inference_path_available(sqlite_engine, timedelta(0))
    await busy.kill()
    await channel.close(None)
    await srv.stop()


async def _forever(spec: Any) -> Any:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def test_without_authenticator_list_nodes_is_refused(sqlite_engine: AsyncEngine) -> None:
    srv = await ControlPlaneServer(sqlite_engine, settings_for_tests()).start()
    channel = grpc.aio.insecure_channel(srv.target)
    stub = nodes_pb2_grpc.NodeAdminServiceStub(channel)  # type: ignore[no-untyped-call]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListNodes(nodes_pb2.ListNodesRequest())
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await inference_path_available(sqlite_engine) is False
    assert isinstance(srv.bus, EventBus)
    await channel.close(None)
    await srv.stop()
