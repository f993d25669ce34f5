"""Warm inference pods on real Podman: the real proxy sidecar in a real loopback-only pod,
forwarding through a real relay socket to a scripted Ollama stand-in."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import pytest
from podman import PodmanClient

from cynode.jobs.v1 import job_pb2
from cynode.node.inference.relay import InferenceRelay
from cynode.node.runtime import JobRunner, SandboxSettings, WarmPodPool, ops, remove_leftovers
from cynode.node.runtime.labels import LABEL_JOB_ID, LABEL_NODE_ID, LABEL_ROLE, LABEL_WARM
from cynode.node.runtime.settings import InferencePodSettings
from cynode.node.runtime.warm_pool import pool_key
from tests.node.runtime.conftest import make_spec, pods_of
from tests.node.runtime.inference_support import PROXY_IMAGE, ScriptedOllama, hosted_relay, serve

pytestmark = [pytest.mark.podman]

COMPLETED = job_pb2.JOB_STATUS_COMPLETED
TAGS = '{"models": [{"name": "scripted:1", "model": "scripted:1"}]}'


@pytest.fixture(scope="module")
async def relay(
    tmp_path_factory: pytest.TempPathFactory, podman_client: PodmanClient
) -> AsyncIterator[InferenceRelay]:
    async for url in serve(ScriptedOllama().app()):
        async with hosted_relay(tmp_path_factory.mktemp("wrelay"), url, podman_client) as relay:
            yield relay


@pytest.fixture
def pod_settings(settings: SandboxSettings, relay: InferenceRelay) -> SandboxSettings:
    pod = InferencePodSettings(
        relay_socket=str(relay.socket_path), proxy_image=PROXY_IMAGE, ready_timeout_s=30
    )
    return dataclasses.replace(settings, inference=pod)


def changed(settings: SandboxSettings, **changes: Any) -> SandboxSettings:
    assert settings.inference is not None
    return dataclasses.replace(
        settings, inference=dataclasses.replace(settings.inference, **changes)
    )


@pytest.fixture
async def pool(podman_client: PodmanClient, clean_node: None) -> AsyncIterator[WarmPodPool]:
    # clean_node comes first, so its check runs after the pool is closed.
    pool = WarmPodPool(podman_client, size=1)
    yield pool
    await pool.close()


async def eventually(check: Callable[[], bool], within: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.05)


async def one_warm_pod(
    client: PodmanClient, pool: WarmPodPool, settings: SandboxSettings, node_id: str
) -> str:
    """Fills the pool (of size 1) and waits for it: the name of the node's one pod."""
    pool.fill(settings)
    await pool.wait_filled()
    [name] = pods_of(client, node_id)
    return name


def containers_in(client: PodmanClient, pod_name: str) -> dict[str, dict[str, str]]:
    """name -> labels of every container of the pod but its infra."""
    pod = client.pods.get(pod_name)
    found = {}
    for member in pod.attrs["Containers"]:
        container = client.containers.get(member["Id"])
        if not container.attrs.get("IsInfra"):
            found[container.name] = container.labels
    return found


async def test_a_warm_pod_is_made_ahead_with_a_running_proxy_and_node_labels(
    podman_client: PodmanClient, pool: WarmPodPool, pod_settings: SandboxSettings, node_id: str
) -> None:
    pool.fill(pod_settings)
    await pool.wait_filled()
    assert (pool.ready_count, pool.made) == (1, 1)
    [name] = pods_of(podman_client, node_id)
    labels = podman_client.pods.get(name).attrs["Labels"]
    assert labels == {LABEL_NODE_ID: node_id, LABEL_ROLE: "pod", LABEL_WARM: pool.pool_id}
    [(sidecar, sidecar_labels)] = containers_in(podman_client, name).items()
    assert sidecar.startswith("cynode-proxy-warm-") and LABEL_JOB_ID not in sidecar_labels
    assert podman_client.containers.get(sidecar).status == "running"
    # Filling again while full makes nothing more.
    pool.fill(pod_settings)
    assert pool.made == 1 and not pool._making

    pod = await pool.take(pod_settings)
    assert pod is not None and pod.pod_name == name and await pod.answers()
    # Single use: the pool has given it away and has nothing in the making.
    assert pool.ready_count == 0 and await pool.take(pod_settings) is None
    await pod.remove()


async def test_a_job_runs_in_the_warm_pod_which_is_removed_and_replaced(
    podman_client: PodmanClient, pool: WarmPodPool, pod_settings: SandboxSettings, node_id: str
) -> None:
    warm = await one_warm_pod(podman_client, pool, pod_settings, node_id)
    warm_id = podman_client.pods.get(warm).id
    spec = make_spec(use_inference=True, commands=["curl -s $OLLAMA_BASE_URL/api/tags; echo"])
    seen: dict[str, str] = {}

    async def on_started(_: datetime) -> None:
        [sandbox] = podman_client.containers.list(
            filters={"label": f"{LABEL_JOB_ID}={spec.job_id}"}
        )
        seen["pod"] = sandbox.attrs["Pod"]

    runner = JobRunner(
        podman_client, pod_settings, on_started=on_started, warm_pods=pool, background_release=True
    )
    result = await runner.run(spec)
    assert result.status == COMPLETED, result
    assert result.stdout.decode().splitlines() == [TAGS]
    assert seen["pod"] == warm_id
    await runner.released()
    await pool.wait_filled()
    # The used pod is gone; a new one waits for the next job.
    [replacement] = pods_of(podman_client, node_id)
    assert replacement != warm and pool.ready_count == 1
    assert (pool.made, pool.taken) == (2, 1)


async def test_a_warm_pod_keeps_the_sandbox_to_loopback_and_the_proxy(
    podman_client: PodmanClient,
    pool: WarmPodPool,
    pod_settings: SandboxSettings,
    relay: InferenceRelay,
) -> None:
    pool.fill(pod_settings)
    await pool.wait_filled()
    spec = make_spec(
        use_inference=True,
        commands=[
            "ls /sys/class/net",
            "curl -sS -m 3 http://1.1.1.1/ >/dev/null 2>&1 && echo internet || echo no-internet",
            f"test -e {relay.socket_path} && echo relay-path || echo no-relay-path",
            "test -e /run/cynode-upstream && echo upstream-dir || echo no-upstream-dir",
            "test -S /run/cynode-inference/proxy.sock && echo proxy-sock",
            "curl -s -o /dev/null -w 'pull %{http_code}\\n' $OLLAMA_BASE_URL/api/pull -d '{}'",
            "touch /run/cynode-inference/x 2>/dev/null && echo shared-rw || echo shared-ro",
            'echo "$OLLAMA_BASE_URL $CYNODE_JOB_ID"',
        ],
    )
    runner = JobRunner(podman_client, pod_settings, warm_pods=pool, background_release=True)
    result = await runner.run(spec)
    await runner.released()
    assert pool.taken == 1
    assert result.status == COMPLETED, result
    assert result.stdout.decode().splitlines() == [
        "lo",
        "no-internet",
        "no-relay-path",
        "no-upstream-dir",
        "proxy-sock",
        "pull 403",
        "shared-ro",
        f"http://localhost:11434 {spec.job_id}",
    ]


async def test_the_result_comes_before_the_pod_is_removed_and_released_waits_for_it(
    podman_client: PodmanClient,
    pool: WarmPodPool,
    pod_settings: SandboxSettings,
    node_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    remove_pod = ops.remove_pod

    def slow_remove_pod(client: PodmanClient, pod_id: str) -> None:
        time.sleep(0.5)
        remove_pod(client, pod_id)

    monkeypatch.setattr(ops, "remove_pod", slow_remove_pod)
    warm = await one_warm_pod(podman_client, pool, pod_settings, node_id)
    runner = JobRunner(podman_client, pod_settings, warm_pods=pool, background_release=True)
    result = await runner.run(make_spec(use_inference=True, commands=["echo done"]))
    assert result.stdout == b"done\n"
    # Returned while the job's pod is still there: its removal runs on.
    assert warm in pods_of(podman_client, node_id)
    await runner.released()
    assert warm not in pods_of(podman_client, node_id)
    sandboxes = {"label": [f"{LABEL_NODE_ID}={node_id}", f"{LABEL_ROLE}=sandbox"]}
    assert podman_client.containers.list(all=True, filters=sandboxes) == []


async def test_other_pod_settings_discard_the_warm_pod_but_another_model_does_not(
    podman_client: PodmanClient, pool: WarmPodPool, pod_settings: SandboxSettings, node_id: str
) -> None:
    first = await one_warm_pod(podman_client, pool, pod_settings, node_id)
    # The default model reaches only the sandbox's env: the pod stays good.
    other_model = changed(pod_settings, default_model="m:1")
    assert pool_key(other_model) == pool_key(pod_settings)
    pool.fill(other_model)
    assert pool.ready_count == 1 and pool.made == 1
    # A sidecar setting does not: the pod goes and one with the new command comes.
    slower = changed(pod_settings, proxy_timeout_s=7)
    assert await pool.take(slower) is None  # nothing made for these yet
    await pool.wait_filled()
    await eventually(lambda: first not in pods_of(podman_client, node_id))
    [second] = pods_of(podman_client, node_id)
    [sidecar] = containers_in(podman_client, second)
    command = podman_client.containers.get(sidecar).attrs["Config"]["Cmd"]
    assert command[command.index("--timeout") + 1] == "7"
    assert pool.ready_count == 1


async def test_settings_that_change_while_a_pod_is_made_get_a_pod_of_their_own(
    podman_client: PodmanClient, pool: WarmPodPool, pod_settings: SandboxSettings, node_id: str
) -> None:
    # A config change while the first pod is still in the making: that pod is removed
    # once made, and a pod for the new settings is made at the same time, not later.
    pool.fill(pod_settings)
    slower = changed(pod_settings, proxy_timeout_s=7)
    pool.fill(slower)
    await pool.wait_filled()
    assert pool.made == 2 and pool.ready_count == 1
    pod = await pool.take(slower)
    assert pod is not None and await pod.answers()
    await pod.remove()
    await eventually(lambda: pods_of(podman_client, node_id) == [])


async def test_a_warm_pod_that_stopped_answering_is_removed_and_the_job_goes_cold(
    podman_client: PodmanClient, pool: WarmPodPool, pod_settings: SandboxSettings, node_id: str
) -> None:
    stale = await one_warm_pod(podman_client, pool, pod_settings, node_id)
    [sidecar] = containers_in(podman_client, stale)
    ops.stop_container(podman_client, sidecar, 1)
    spec = make_spec(use_inference=True, commands=["curl -s $OLLAMA_BASE_URL/api/tags; echo"])
    runner = JobRunner(podman_client, pod_settings, warm_pods=pool, background_release=True)
    result = await runner.run(spec)
    assert result.status == COMPLETED and result.stdout.decode().splitlines() == [TAGS]
    await runner.released()
    assert pool.taken == 0
    await pool.wait_filled()
    await eventually(lambda: stale not in pods_of(podman_client, node_id))


async def test_a_pod_that_cannot_be_made_leaves_nothing_and_the_job_runs_cold(
    podman_client: PodmanClient, pool: WarmPodPool, pod_settings: SandboxSettings, node_id: str
) -> None:
    # The sandbox image has no proxy entrypoint: the sidecar cannot run.
    broken = changed(pod_settings, proxy_image="localhost/cynode-sandbox:latest", ready_timeout_s=5)
    pool.fill(broken)
    await pool.wait_filled()
    assert (pool.ready_count, pool.failed) == (0, 1)
    await eventually(lambda: pods_of(podman_client, node_id) == [])
    runner = JobRunner(podman_client, broken, warm_pods=pool, background_release=True)
    # The job runs cold, its proxy in the proxy host: it needs no sidecar of its own.
    spec = make_spec(use_inference=True, commands=["curl -sf $OLLAMA_BASE_URL/api/tags"])
    result = await runner.run(spec)
    assert result.status == job_pb2.JOB_STATUS_COMPLETED, result
    await runner.released()
    await pool.wait_filled()


async def test_a_take_waits_for_the_pod_in_the_making_instead_of_making_another(
    pool: WarmPodPool, pod_settings: SandboxSettings
) -> None:
    pool.fill(pod_settings)
    pod = await pool.take(pod_settings)
    assert pod is not None and await pod.answers()
    assert (pool.made, pool.taken, pool.ready_count) == (1, 1, 0)
    assert not pool._making
    await pod.remove()


async def test_a_taker_that_gives_up_leaves_the_pod_to_be_removed(
    podman_client: PodmanClient, pool: WarmPodPool, pod_settings: SandboxSettings, node_id: str
) -> None:
    pool.fill(pod_settings)
    taker = asyncio.create_task(pool.take(pod_settings))
    await asyncio.sleep(0.05)
    taker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await taker
    await pool.wait_filled()
    await eventually(lambda: pods_of(podman_client, node_id) == [])
    assert pool.ready_count == 0


async def test_closing_removes_ready_pods_and_pods_in_the_making(
    podman_client: PodmanClient, pool: WarmPodPool, pod_settings: SandboxSettings, node_id: str
) -> None:
    pool.size = 2
    pool.fill(pod_settings)
    await pool.wait_filled()
    assert pool.ready_count == 2
    pool.size = 3
    pool.fill(pod_settings)  # a third one is in the making when the node stops
    await asyncio.sleep(0.1)
    await pool.close()
    assert pods_of(podman_client, node_id) == []
    pool.fill(pod_settings)  # a closed pool makes nothing
    assert await pool.take(pod_settings) is None and not pool._making


async def test_start_up_cleanup_removes_warm_pods_of_a_node_that_died(
    podman_client: PodmanClient, pool: WarmPodPool, pod_settings: SandboxSettings, node_id: str
) -> None:
    pool.fill(pod_settings)
    await pool.wait_filled()
    report = await remove_leftovers(podman_client, node_id)
    assert (len(report.pods), len(report.containers), len(report.volumes)) == (1, 0, 1)
    # What the pool held is already gone: closing it is quiet.


async def test_no_warm_pods_without_inference_or_with_size_zero(
    podman_client: PodmanClient, settings: SandboxSettings, pod_settings: SandboxSettings
) -> None:
    off = WarmPodPool(podman_client, size=0)
    off.fill(pod_settings)
    assert await off.take(pod_settings) is None and not off._making
    plain = WarmPodPool(podman_client, size=1)
    plain.fill(settings)  # a node without inference
    assert await plain.take(settings) is None and not plain._making
    assert pool_key(dataclasses.replace(pod_settings, node_id="")) is None
    with pytest.raises(ValueError, match="negative"):
        WarmPodPool(podman_client, size=-1)
