"""NodeAdminService beyond the listing (SPEC §2.8), over real gRPC with simulated
nodes: get, drain (running jobs finish, no new work, the node stays connected),
disable (running jobs are requeued elsewhere), enable, refresh config; on SQLite and
Postgres, and across two replicas."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from cynode.gateway.v1 import nodes_pb2, nodes_pb2_grpc
from cynode.jobs.v1 import job_pb2
from cynode.orchestrator.simnode import SimNode
from cynode.orchestrator.simnode.harness import (
    ControlPlaneServer,
    enqueue_jobs,
    make_user,
    settings_for_tests,
)
from cynode.orchestrator.store.tables import JOBS, NODES
from cynode.testing import until

PSK = "test-psk-0123456789"
ADMIN = (("authorization", "Bearer admin"),)
USER = (("authorization", "Bearer user"),)
AUDIT = NODES.metadata.tables["audit_log"]


@dataclass
class Who:
    is_admin: bool
    user_id: str = "01HADMIN000000000000000000"
    handle: str = "root"


def _authenticate(context: grpc.aio.ServicerContext[Any, Any]) -> Who:
    md = dict(context.invocation_metadata() or ())
    return Who(is_admin=md.get("authorization") == "Bearer admin")


class Held:
    """Jobs run until released."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}

    async def __call__(self, spec: job_pb2.JobSpec) -> job_pb2.JobResult:
        self.started.append(spec.job_id)
        await self.gates.setdefault(spec.job_id, asyncio.Event()).wait()
        return job_pb2.JobResult(status=job_pb2.JOB_STATUS_COMPLETED, exit_code=0)

    def release_all(self) -> None:
        for job in self.started:
            self.gates.setdefault(job, asyncio.Event()).set()


async def _job(engine: AsyncEngine, job_id: str) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(sa.select(JOBS).where(JOBS.c.id == job_id))).one()


@pytest.fixture
async def admin_server(engine: AsyncEngine) -> Any:
    srv = await ControlPlaneServer(engine, settings_for_tests(), authenticate=_authenticate).start()
    channel = grpc.aio.insecure_channel(srv.target)
    stub = nodes_pb2_grpc.NodeAdminServiceStub(channel)  # type: ignore[no-untyped-call]
    yield srv, stub
    await channel.close(None)
    await srv.stop()


async def test_drain_lets_running_work_finish_and_takes_no_more(admin_server: Any) -> None:
    srv, stub = admin_server
    held = Held()
    node = SimNode(srv.target, PSK, "drain-1", slots=2, runtime=held)
    await node.start()
    user = await make_user(srv.engine)
    try:
        [(_, first)] = await enqueue_jobs(srv.engine, user, 1, bus=srv.bus)
        await until(lambda: held.started == [first], what="first job running")
        resp = await stub.DrainNode(nodes_pb2.DrainNodeRequest(node_id="drain-1"), metadata=ADMIN)
        assert (resp.node_id, resp.drained) == (node.node_id, True)
        got = await stub.GetNode(nodes_pb2.GetNodeRequest(node_id=node.node_id), metadata=ADMIN)
        assert (got.status, got.admin_state, got.node_slug) == ("draining", "draining", "drain-1")
        [(_, second)] = await enqueue_jobs(srv.engine, user, 1, bus=srv.bus)
        await asyncio.sleep(0.5)  # a free slot, but no new work
        assert held.started == [first]
        held.release_all()
        await until(lambda: first in [k[0] for k in node.acked], what="first job finished")
        assert (await _job(srv.engine, first)).status == "completed"
        assert node.connected.is_set()
        assert (await _job(srv.engine, second)).status == "queued"
        enabled = await stub.EnableNode(
            nodes_pb2.EnableNodeRequest(node_id="drain-1"), metadata=ADMIN
        )
        assert enabled.enabled
        await until(lambda: second in held.started, what="second job ran after enable")
        listed = await stub.ListNodes(nodes_pb2.ListNodesRequest(), metadata=ADMIN)
        assert [(n.node_slug, n.status, n.admin_state) for n in listed.nodes] == [
            ("drain-1", "online", "active")
        ]
    finally:
        held.release_all()
        await node.stop()
    async with srv.engine.connect() as conn:
        acts = [
            (r.action, r.outcome, r.node_id, r.handle)
            for r in await conn.execute(
                sa.select(AUDIT).where(AUDIT.c.action.like("node_%")).order_by(AUDIT.c.id)
            )
        ]
    assert ("node_drain", "ok", node.node_id, "root") in acts
    assert ("node_enable", "ok", node.node_id, "root") in acts


async def test_disable_requeues_running_jobs_elsewhere(admin_server: Any) -> None:
    srv, stub = admin_server
    held = Held()
    one = SimNode(srv.target, PSK, "dis-1", slots=1, runtime=held)
    await one.start()
    user = await make_user(srv.engine)
    other = Held()
    two: SimNode | None = None
    try:
        [(_, job)] = await enqueue_jobs(srv.engine, user, 1, bus=srv.bus)
        await until(lambda: held.started == [job], what="running on dis-1")
        two = SimNode(srv.target, PSK, "dis-2", slots=1, runtime=other)
        await two.start()
        resp = await stub.DisableNode(nodes_pb2.DisableNodeRequest(node_id="dis-1"), metadata=ADMIN)
        assert (resp.disabled, resp.requeued) == (True, 1)
        await until(lambda: other.started == [job], timeout=30, what="requeued onto dis-2")
        # The disabled node was told to drop its copy, and stays connected.
        await until(lambda: any(c.job_id == job for c in one.cancels), what="cancel")
        assert one.connected.is_set()
        other.release_all()
        await until(lambda: job in [k[0] for k in two.acked] if two else False, what="done")
        row = await _job(srv.engine, job)
        assert (row.status, row.attempt, row.node_id) == ("completed", 2, two.node_id)
        got = await stub.GetNode(nodes_pb2.GetNodeRequest(node_id="dis-1"), metadata=ADMIN)
        assert got.status == "disabled"
    finally:
        held.release_all()
        other.release_all()
        await one.stop()
        if two is not None:
            await two.stop()


async def test_refresh_config_pushes_a_new_version(admin_server: Any) -> None:
    srv, stub = admin_server
    node = SimNode(srv.target, PSK, "cfg-1", slots=1)
    await node.start()
    try:
        before = node.config_version
        resp = await stub.RefreshNodeConfig(
            nodes_pb2.RefreshNodeConfigRequest(node_id="cfg-1"), metadata=ADMIN
        )
        assert resp.node_id == node.node_id and resp.config_version != before
        await until(lambda: resp.config_version in node.config_changes, what="ConfigChanged")
        await until(lambda: node.config_version == resp.config_version, what="refetched")
    finally:
        await node.stop()


async def test_gate_and_unknown_nodes(admin_server: Any) -> None:
    srv, stub = admin_server
    calls = [
        (stub.GetNode, nodes_pb2.GetNodeRequest(node_id="ghost")),
        (stub.DrainNode, nodes_pb2.DrainNodeRequest(node_id="ghost")),
        (stub.DisableNode, nodes_pb2.DisableNodeRequest(node_id="ghost")),
        (stub.EnableNode, nodes_pb2.EnableNodeRequest(node_id="ghost")),
        (stub.RefreshNodeConfig, nodes_pb2.RefreshNodeConfigRequest(node_id="ghost")),
    ]
    for call, request in calls:
        for metadata, code in (
            (USER, grpc.StatusCode.PERMISSION_DENIED),
            (ADMIN, grpc.StatusCode.NOT_FOUND),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(request, metadata=metadata)
            assert err.value.code() == code
    async with srv.engine.connect() as conn:
        denied = (
            await conn.execute(
                sa.select(sa.func.count())
                .select_from(AUDIT)
                .where(AUDIT.c.outcome == "denied", AUDIT.c.action.like("node_%"))
            )
        ).scalar()
    assert denied == len(calls)


async def test_drain_on_one_replica_stops_work_on_the_other(pg_engine: AsyncEngine) -> None:
    one = await ControlPlaneServer(
        pg_engine, settings_for_tests(), authenticate=_authenticate
    ).start()
    two = await ControlPlaneServer(
        pg_engine, settings_for_tests(), authenticate=_authenticate
    ).start()
    held = Held()
    node = SimNode(two.target, PSK, "rep-1", slots=2, runtime=held)
    await node.start()
    channel = grpc.aio.insecure_channel(one.target)
    stub = nodes_pb2_grpc.NodeAdminServiceStub(channel)  # type: ignore[no-untyped-call]
    try:
        user = await make_user(pg_engine)
        await stub.DrainNode(nodes_pb2.DrainNodeRequest(node_id="rep-1"), metadata=ADMIN)
        await until(lambda: node.node_id in two.cp.scheduler.paused, what="paused on two")
        [(_, job)] = await enqueue_jobs(pg_engine, user, 1, bus=two.bus)
        await asyncio.sleep(0.5)
        assert held.started == []
        await stub.EnableNode(nodes_pb2.EnableNodeRequest(node_id="rep-1"), metadata=ADMIN)
        await until(lambda: held.started == [job], what="runs after enable")
    finally:
        held.release_all()
        await node.stop()
        await channel.close(None)
        await one.stop()
        await two.stop()
