"""Helpers for runtime tests: a node id of their own per test, so tests never see each
other's containers, and a check after every Podman test that nothing was left behind."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from podman import PodmanClient
from ulid import ULID

from cynode.jobs.v1 import job_pb2
from cynode.node.runtime import LABEL_NODE_ID, SandboxSettings, remove_leftovers_sync
from tests.fixtures.podman import SANDBOX_IMAGE


def make_spec(**fields: Any) -> job_pb2.JobSpec:
    """A JobSpec with fresh ids; `commands=[...]` or `script=...` pick the input mode."""
    fields.setdefault("job_id", str(ULID()))
    fields.setdefault("task_id", str(ULID()))
    fields.setdefault("attempt", 1)
    if "input_mode" not in fields:
        fields["input_mode"] = (
            job_pb2.INPUT_MODE_SCRIPT if "script" in fields else job_pb2.INPUT_MODE_COMMANDS
        )
    return job_pb2.JobSpec(**fields)


@pytest.fixture
def node_id() -> str:
    return f"test-{str(ULID()).lower()}"


@pytest.fixture
def settings(node_id: str) -> SandboxSettings:
    return SandboxSettings(image=SANDBOX_IMAGE, node_id=node_id)


def leftovers(client: PodmanClient, node_id: str) -> tuple[list[str], list[str]]:
    selector = {"label": f"{LABEL_NODE_ID}={node_id}"}
    containers = [c.name for c in client.containers.list(all=True, filters=selector)]
    volumes = [v.name for v in client.volumes.list(filters=selector)]
    return containers, volumes


@pytest.fixture
def no_leftovers(podman_client: PodmanClient, node_id: str) -> Iterator[None]:
    """Fails the test when a container or volume of its node outlives it."""
    yield
    left = leftovers(podman_client, node_id)
    remove_leftovers_sync(podman_client, node_id)
    assert left == ([], []), f"left behind: {left}"


def pods_of(client: PodmanClient, node_id: str) -> list[str]:
    return [p.name for p in client.pods.list(filters={"label": f"{LABEL_NODE_ID}={node_id}"})]


@pytest.fixture
def clean_node(podman_client: PodmanClient, node_id: str) -> Iterator[None]:
    """Fails the test when a container, volume or pod of its node outlives it."""
    yield
    left = (*leftovers(podman_client, node_id), pods_of(podman_client, node_id))
    assert left == ([], [], []), f"left behind: {left}"
