"""Fixtures for node tests: a real in-test gRPC control plane and a node config."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from cynode.node.config import NodeConfig
from tests.node.cp_server import PSK, FakeControlPlane, start_server


@pytest.fixture
async def control_plane() -> AsyncIterator[tuple[FakeControlPlane, str]]:
    plane = FakeControlPlane()
    server, target = await start_server(plane)
    yield plane, target
    await server.stop(grace=None)


@pytest.fixture
def node_config(tmp_path: Path) -> NodeConfig:
    return NodeConfig(
        node_slug="node-test",
        psk=PSK,
        state_dir=tmp_path / "state",
        worker_api_port=1,
        reconnect_initial_s=0.05,
        reconnect_max_s=0.2,
    )


@pytest.fixture
async def channel(control_plane: tuple[FakeControlPlane, str]) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(control_plane[1]) as chan:
        yield chan
