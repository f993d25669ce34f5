"""NodeInference, mode by mode: none runs nothing, existing checks Ollama and relays to
it, container starts Ollama in Podman first."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from podman import PodmanClient

from cynode.node.config import NodeConfig
from cynode.node.inference.check import InferenceUnavailable
from cynode.node.inference.relay import RELAY_SOCKET_NAME
from cynode.node.inference.setup import NodeInference
from tests.node.inference.conftest import BASE_IMAGE, STAND_IN, podman


def is_socket(path: str) -> bool:
    return Path(path).is_socket()


def _no_podman() -> PodmanClient:
    raise AssertionError("no Podman here")


async def test_mode_none_runs_nothing(node_config: NodeConfig) -> None:
    inference = NodeInference(node_config, _no_podman)
    status = await inference.start()
    assert (status.running, status.models) == (False, [])
    assert inference.pod_settings("m") is None and inference.relay is None
    await inference.close()


async def test_mode_existing_checks_ollama_then_relays_to_it(
    node_config: NodeConfig, tags_server: tuple[str, list[str]]
) -> None:
    url, _ = tags_server
    config = replace(node_config, inference_mode="existing", inference_url=url)
    inference = NodeInference(config, _no_podman)
    assert inference.pod_settings() is None  # not before the relay runs
    status = await inference.start()
    try:
        assert (status.running, status.models) == (True, ["tiny:1", "other:2"])
        pod = inference.pod_settings("from-orchestrator")
        assert pod is not None
        assert pod.relay_socket == str(config.state_dir / "inference" / RELAY_SOCKET_NAME)
        assert is_socket(pod.relay_socket)
        assert (pod.default_model, pod.proxy_image) == (
            "from-orchestrator",
            "localhost/cynode-proxy",
        )
        # Cold jobs' proxies run in the proxy host, reached at its control socket; it
        # could not start here (no Podman), so the node keeps trying and says why. The
        # jobs' socket directories are under the state dir, where start-up cleanup
        # finds them.
        assert pod.proxy_host_socket == str(inference.proxy_host_socket)
        assert inference.proxy_host_socket.name == "host.sock"
        assert "no Podman here" in inference.proxy_host_error
        assert inference.proxy_host is not None and not inference.proxy_host.running
        assert pod.job_socket_dir == str(config.state_dir / "inference-jobs")
        assert pod.job_max_connections == config.inference_job_max_connections == 64
        # The node's own settings win over the orchestrator's default.
        mine = NodeInference(
            replace(config, inference_default_model="mine:1", inference_job_max_connections=9),
            _no_podman,
        )
        mine.relay = inference.relay
        assert (pod2 := mine.pod_settings("from-orchestrator")) is not None
        assert (pod2.default_model, pod2.job_max_connections) == ("mine:1", 9)
    finally:
        await inference.close()


async def test_mode_existing_with_no_ollama_fails_and_starts_no_relay(
    node_config: NodeConfig,
) -> None:
    config = replace(node_config, inference_mode="existing", inference_url="http://127.0.0.1:1")
    inference = NodeInference(config, _no_podman)
    with pytest.raises(InferenceUnavailable, match="unreachable"):
        await inference.start()
    assert inference.relay is None


@pytest.mark.podman
async def test_mode_container_with_a_missing_image_says_how_to_fix_it(
    node_config: NodeConfig, podman_client: PodmanClient
) -> None:
    config = replace(
        node_config, inference_mode="container", inference_image="localhost/cynode-no-ollama"
    )
    inference = NodeInference(config, lambda: podman_client)
    with pytest.raises(InferenceUnavailable, match="localhost/cynode-no-ollama is missing"):
        await inference.start()
    assert inference.relay is None
    await inference.close()


@pytest.mark.podman
async def test_mode_container_starts_reuses_and_removes_the_ollama_container(
    node_config: NodeConfig,
    podman_client: PodmanClient,
    stand_in_names: tuple[str, str],
    unused_tcp_port: int,
) -> None:
    name, volume = stand_in_names
    config = replace(
        node_config,
        inference_mode="container",
        inference_image=BASE_IMAGE,
        inference_models_volume=volume,
        inference_url=f"http://127.0.0.1:{unused_tcp_port}",
    )
    inference = NodeInference(
        config, lambda: podman_client, container_command=["python3", "-c", STAND_IN]
    )
    assert inference.container is not None
    inference.container.name = name
    try:
        status = await inference.start()
        assert (status.running, status.models) == (True, ["stand-in:1"])
        assert inference.upstream == f"http://127.0.0.1:{unused_tcp_port}"
        first = inference.container.container_id
        assert podman("volume", "exists", volume).returncode == 0
        # A second start (a retried start-up step) reuses the running container.
        await inference.start()
        assert inference.container.container_id == first
        pod = inference.pod_settings()
        assert pod is not None and is_socket(pod.relay_socket)
    finally:
        await inference.close()
    assert podman("container", "exists", name).returncode == 1
    assert podman("volume", "exists", volume).returncode == 0  # the models stay
