"""The node daemon against the REAL orchestrator control plane (NodeService +
DispatchService + scheduler on SQLite) and real Podman: registration, config ack, a
queued job dispatched, run in a container, its result stored and acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from cynode.inference.v1 import chat_pb2
from cynode.node.config import NodeConfig
from cynode.node.cpclient import MAX_RECEIVE_BYTES
from cynode.node.daemon import NodeDaemon
from cynode.node.devinference import start_dev_inference
from cynode.orchestrator.app import MAX_TASK_BYTES
from cynode.orchestrator.simnode.harness import (
    ControlPlaneServer,
    enqueue_jobs,
    make_user,
    settings_for_tests,
)
from cynode.orchestrator.store import make_engine, new_id, upgrade
from cynode.orchestrator.store.tables import ATTACHMENTS, JOBS, TASKS
from cynode.testing.waiting import until
from tests.node.daemonkit import running_daemon

pytestmark = [pytest.mark.podman, pytest.mark.slow]


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'cp.db'}")
    await upgrade(engine)
    yield engine
    await engine.dispose()


@contextlib.asynccontextmanager
async def real_plane(engine: AsyncEngine) -> AsyncIterator[ControlPlaneServer]:
    server = await ControlPlaneServer(
        engine, settings_for_tests(lease_seconds=30, heartbeat_seconds=1)
    ).start()
    try:
        yield server
    finally:
        await server.stop()


async def job_row(engine: AsyncEngine, job_id: str) -> dict[str, object]:
    async with engine.connect() as conn:
        row = (await conn.execute(sa.select(JOBS).where(JOBS.c.id == job_id))).mappings().one()
    return dict(row)


@contextlib.asynccontextmanager
async def ready_node(
    node_config: NodeConfig, plane: ControlPlaneServer
) -> AsyncIterator[NodeDaemon]:
    config = replace(node_config, control_plane_grpc=plane.target, worker_api_port=0)
    async with running_daemon(config) as daemon:
        assert daemon.readiness.ready, daemon.readiness.describe()
        yield daemon


async def finished_row(engine: AsyncEngine, job_id: str) -> dict[str, object]:
    row: dict[str, object] = {}
    for _ in range(3000):
        row = await job_row(engine, job_id)
        if row["status"] in ("completed", "failed"):
            break
        await asyncio.sleep(0.05)
    return row


async def test_a_queued_job_runs_on_the_node_and_its_result_is_stored(
    engine: AsyncEngine, node_config: NodeConfig
) -> None:
    async with real_plane(engine) as plane, ready_node(node_config, plane) as daemon:
        user = await make_user(engine)
        [(_, job_id)] = await enqueue_jobs(engine, user, 1, bus=plane.bus)
        row = await finished_row(engine, job_id)
        assert row["status"] == "completed", row
        assert row["stdout"] == b"hi\n"
        # The ResultAck came back: nothing is left in the node's spool.
        assert daemon.dispatch is not None
        for _ in range(200):
            if not daemon.dispatch.spool.all():
                break
            await asyncio.sleep(0.02)
        assert daemon.dispatch.spool.all() == []


def test_the_node_takes_an_assignment_as_large_as_the_largest_task() -> None:
    assert MAX_RECEIVE_BYTES > MAX_TASK_BYTES


async def test_an_assignment_over_grpcs_default_4_mib_reaches_the_sandbox(
    engine: AsyncEngine, node_config: NodeConfig
) -> None:
    # Two attachments of SPEC's largest size: 20 MiB in the one JobAssignment message.
    big = 10 * 1024 * 1024
    async with real_plane(engine) as plane:
        user = await make_user(engine)
        [(task_id, job_id)] = await enqueue_jobs(engine, user, 1)
        async with engine.begin() as conn:
            await conn.execute(
                sa.update(TASKS)
                .where(TASKS.c.id == task_id)
                .values(commands=["cat /workspace/a.bin /workspace/b.bin | wc -c"])
            )
            await conn.execute(
                sa.insert(ATTACHMENTS),
                [
                    {"id": new_id(), "task_id": task_id, "name": name, "content": bytes([n]) * big}
                    for n, name in enumerate(("a.bin", "b.bin"))
                ],
            )
        async with ready_node(node_config, plane):
            row = await finished_row(engine, job_id)
    assert row["status"] == "completed", row
    assert row["stdout"] == f"{2 * big}\n".encode()


async def test_the_daemon_opens_its_inference_link_and_serves_a_chat(
    engine: AsyncEngine, node_config: NodeConfig
) -> None:
    """SPEC §7.12: after its inference step the node opens the link beside dispatch;
    a chat placed on it goes through the node's relay to the model and back."""
    model = await start_dev_inference("127.0.0.1", 0, n_ctx=1024, default_num_predict=12)
    try:
        async with real_plane(engine) as plane:
            config = replace(
                node_config,
                control_plane_grpc=plane.target,
                worker_api_port=0,
                inference_mode="existing",
                inference_url=model.url,
            )
            async with running_daemon(config) as daemon:
                assert daemon.readiness.ready, daemon.readiness.describe()
                await until(lambda: len(plane.cp.links) == 1, timeout=30)
                [link] = list(plane.cp.links)
                assert link.models == {"smollm2:135m"} and link.capacity == 1
                request = chat_pb2.ChatRequest(model="smollm2:135m")
                request.messages.add(role="user", content="Hi")
                request.options.max_tokens = 3
                chunks = [c async for c in plane.cp.router.chat("someone", request)]
                assert chunks[-1].finish_reason == "length"
                assert chunks[-1].usage.completion_tokens == 3
            # The node stopped: its link is gone with it.
            await until(lambda: len(plane.cp.links) == 0, timeout=10)
    finally:
        await model.close()
