"""Leftover removal at node start, against real Podman."""

from __future__ import annotations

import asyncio

import pytest
from podman import PodmanClient
from ulid import ULID

from cynode.node.runtime import LABEL_NODE_ID, JobRunner, SandboxSettings, remove_leftovers
from cynode.node.runtime.labels import node_label_filter
from tests.fixtures.podman import SANDBOX_IMAGE
from tests.node.runtime.conftest import leftovers, make_spec

pytestmark = [pytest.mark.podman, pytest.mark.usefixtures("no_leftovers")]


def _make_objects(client: PodmanClient, node_id: str) -> tuple[str, str, str]:
    labels = {LABEL_NODE_ID: node_id, "cynode.job_id": "j"}
    volume = client.volumes.create(f"cynode-test-{ULID()}".lower(), labels=labels)
    pod = client.pods.create(f"cynode-test-pod-{ULID()}".lower(), labels=labels, no_infra=True)
    container = client.containers.create(
        SANDBOX_IMAGE,
        ["sleep", "600"],
        labels=labels,
        network_mode="none",
        init=True,
        volumes={volume.name: {"bind": "/workspace", "mode": "rw"}},
    )
    container.start()
    return container.id, pod.id, volume.name


async def test_removes_containers_pods_and_volumes_of_this_node_only(
    podman_client: PodmanClient, node_id: str
) -> None:
    other_node = f"other-{node_id}"
    ours = _make_objects(podman_client, node_id)
    theirs = _make_objects(podman_client, other_node)
    try:
        report = await remove_leftovers(podman_client, node_id)
        assert len(report.containers) == len(report.pods) == len(report.volumes) == 1
        assert report.total == 3
        assert not podman_client.containers.exists(ours[0])
        assert not podman_client.pods.exists(ours[1])
        assert not podman_client.volumes.exists(ours[2])
        assert podman_client.containers.exists(theirs[0])
        assert podman_client.pods.exists(theirs[1])
        assert podman_client.volumes.exists(theirs[2])
    finally:
        await remove_leftovers(podman_client, other_node)
    assert leftovers(podman_client, other_node) == ([], [])


async def test_nothing_to_remove_is_an_empty_report(
    podman_client: PodmanClient, node_id: str
) -> None:
    assert (await remove_leftovers(podman_client, node_id)).total == 0


async def test_removes_what_a_killed_runner_left(
    podman_client: PodmanClient, settings: SandboxSettings
) -> None:
    # A node that dies mid-job: the run task is cancelled hard, then the node restarts.
    started = asyncio.Event()

    async def on_started(_: object) -> None:
        started.set()

    runner = JobRunner(podman_client, settings, on_started=on_started)
    job = asyncio.create_task(runner.run(make_spec(commands=["sleep 600"])))
    await asyncio.wait_for(started.wait(), 30)
    job.cancel()
    # cancelling the task still releases the hooks on the way out
    with pytest.raises(asyncio.CancelledError):
        await job
    await remove_leftovers(podman_client, settings.node_id)
    assert leftovers(podman_client, settings.node_id) == ([], [])


def test_an_empty_node_id_is_refused() -> None:
    with pytest.raises(ValueError, match="node_id"):
        node_label_filter("")
