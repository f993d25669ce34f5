"""When a job's containers and volumes go, relative to its result, on real Podman.

By default `run` returns once everything is removed. With `background_release` (what
the node uses) it returns as soon as the result is complete, and `released()` returns
once the removal is done.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import pytest
from podman import PodmanClient

from cynode.jobs.v1 import job_pb2
from cynode.node.runtime import JobRunner, SandboxSettings, ops
from tests.node.runtime.conftest import leftovers, make_spec

pytestmark = [pytest.mark.podman, pytest.mark.usefixtures("no_leftovers")]


@pytest.fixture
def slow_removal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Container removal takes half a second longer, so its timing can be observed."""
    remove = ops.remove_container

    def slow(client: PodmanClient, container_id: str) -> None:
        time.sleep(0.5)
        remove(client, container_id)

    monkeypatch.setattr(ops, "remove_container", slow)


@pytest.mark.usefixtures("slow_removal")
async def test_background_release_returns_the_result_before_the_removal(
    podman_client: PodmanClient, settings: SandboxSettings
) -> None:
    runner = JobRunner(podman_client, settings, background_release=True)
    result = await runner.run(make_spec(commands=["echo out"]))
    assert (result.status, result.stdout) == (job_pb2.JOB_STATUS_COMPLETED, b"out\n")
    containers, _ = leftovers(podman_client, settings.node_id)
    assert len(containers) == 1  # still being removed
    await runner.released()
    assert leftovers(podman_client, settings.node_id) == ([], [])


@pytest.mark.usefixtures("slow_removal")
async def test_by_default_run_returns_once_everything_is_removed(
    podman_client: PodmanClient, settings: SandboxSettings
) -> None:
    runner = JobRunner(podman_client, settings)
    await runner.released()  # before any run: nothing to wait for
    result = await runner.run(make_spec(commands=["true"]))
    assert result.status == job_pb2.JOB_STATUS_COMPLETED
    assert leftovers(podman_client, settings.node_id) == ([], [])
    await asyncio.wait_for(runner.released(), 0.1)


async def test_a_cancelled_run_removes_everything_before_it_ends(
    podman_client: PodmanClient, settings: SandboxSettings
) -> None:
    # The node cancels job tasks when it stops: nobody would wait for released() then.
    started = asyncio.Event()

    async def on_started(_: datetime) -> None:
        started.set()

    runner = JobRunner(podman_client, settings, on_started=on_started, background_release=True)
    job = asyncio.create_task(runner.run(make_spec(commands=["sleep 600"])))
    await asyncio.wait_for(started.wait(), 30)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert leftovers(podman_client, settings.node_id) == ([], [])


async def test_a_waiter_that_gives_up_leaves_the_removal_running(
    podman_client: PodmanClient, settings: SandboxSettings, slow_removal: None
) -> None:
    runner = JobRunner(podman_client, settings, background_release=True)
    await runner.run(make_spec(commands=["true"]))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(runner.released(), 0.05)
    await runner.released()
    assert leftovers(podman_client, settings.node_id) == ([], [])
