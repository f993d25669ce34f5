"""Helpers for runtime tests: a node id of their own per test, so tests never see each
other's containers, and a check after every Podman test that nothing was left behind."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol

import pytest
from podman import PodmanClient
from ulid import ULID

from cynode.jobs.v1 import job_pb2
from cynode.node.runtime import (
    LABEL_NODE_ID,
    JobRunner,
    SandboxSettings,
    WarmSandboxPool,
    remove_leftovers_sync,
)
from tests.fixtures.podman import SANDBOX_IMAGE
from tests.node.runtime.inference_support import ScriptedOllama, serve


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


class RunnerMaker(Protocol):
    """Makes a JobRunner for a cold or a warm run (`mode`); see the `make_runner` fixture."""

    mode: str

    async def __call__(
        self, settings: SandboxSettings, *, expect: str = "", **kwargs: Any
    ) -> JobRunner: ...


@pytest.fixture(params=["cold", "warm"])
async def make_runner(
    request: pytest.FixtureRequest, podman_client: PodmanClient
) -> AsyncIterator[RunnerMaker]:
    """Runners for the cold path, or for the warm path: each warm runner gets its own pool
    of one warm sandbox made for its settings, and must then run its job in it (a test
    that expects the cold path anyway says `expect="cold"`)."""
    mode: str = request.param
    made: list[tuple[JobRunner, str]] = []
    pools: list[WarmSandboxPool] = []

    async def make(settings: SandboxSettings, *, expect: str = "", **kwargs: Any) -> JobRunner:
        if mode == "warm":
            pool = WarmSandboxPool(podman_client, size=1)
            pools.append(pool)
            pool.fill(settings)
            await pool.wait_filled()
            assert pool.ready_count == 1, "the warm sandbox was not made"
            kwargs["warm_sandboxes"] = pool
        runner = JobRunner(podman_client, settings, **kwargs)
        made.append((runner, expect or mode))
        return runner

    make.mode = mode  # type: ignore[attr-defined]
    yield make  # type: ignore[misc]
    for pool in pools:
        await pool.close()
    for runner, expected in made:
        if runner.path:  # it ran a job (a job cancelled before its run has no path)
            assert runner.path == expected, f"ran {runner.path}, expected {expected}"


@pytest.fixture(scope="module")
async def scripted() -> AsyncIterator[tuple[ScriptedOllama, str]]:
    """A scripted Ollama on its own port, one per test module."""
    upstream = ScriptedOllama()
    async for url in serve(upstream.app()):
        yield upstream, url
