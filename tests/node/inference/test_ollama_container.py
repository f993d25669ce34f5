"""The Ollama container of mode container: how it is created, which GPUs it gets, and
what the node says when it exits or never answers."""

from __future__ import annotations

from pathlib import Path

import pytest
from podman import PodmanClient

from cynode.node.config import NodeConfig
from cynode.node.inference.check import InferenceUnavailable
from cynode.node.inference.ollama_container import (
    OllamaContainer,
    gpu_devices,
    ollama_create_kwargs,
)
from tests.node.inference.conftest import BASE_IMAGE, podman


def test_container_kwargs_publish_on_loopback_with_models_and_gpus() -> None:
    kwargs = ollama_create_kwargs(
        "ollama/ollama", name="o", models_volume="models", host_port=11500, devices=["/dev/kfd"]
    )
    assert kwargs["ports"] == {"11434/tcp": ("127.0.0.1", 11500)}
    assert kwargs["volumes"] == {"models": {"bind": "/root/.ollama", "mode": "rw"}}
    assert kwargs["devices"] == ["/dev/kfd"] and "command" not in kwargs
    assert "cynode.node_id" not in kwargs["labels"]  # never removed as a job leftover


def test_gpu_devices_are_the_ones_present(tmp_path: Path) -> None:
    (tmp_path / "nvidia0").touch()
    found = gpu_devices((str(tmp_path / "nvidia0"), str(tmp_path / "kfd")))
    assert found == [str(tmp_path / "nvidia0")]


@pytest.mark.podman
async def test_mode_container_reports_a_container_that_exits(
    node_config: NodeConfig, podman_client: PodmanClient, stand_in_names: tuple[str, str]
) -> None:
    name, volume = stand_in_names
    container = OllamaContainer(
        lambda: podman_client,
        image=BASE_IMAGE,
        models_volume=volume,
        url="http://127.0.0.1:1",
        name=name,
        command=["sh", "-c", "exit 3"],
    )
    # A stopped container of that name (a node killed long ago) is replaced, not reused.
    assert podman("create", "--name", name, BASE_IMAGE, "true").returncode == 0
    with pytest.raises(InferenceUnavailable, match="exited"):
        await container.ensure()
    await container.stop()


@pytest.mark.podman
async def test_mode_container_reports_one_that_never_answers(
    node_config: NodeConfig, podman_client: PodmanClient, stand_in_names: tuple[str, str]
) -> None:
    name, volume = stand_in_names
    container = OllamaContainer(
        lambda: podman_client,
        image=BASE_IMAGE,
        models_volume=volume,
        url="http://127.0.0.1:1",
        name=name,
        command=["sleep", "60"],
        ready_timeout_s=1,
    )
    with pytest.raises(InferenceUnavailable, match="did not answer"):
        await container.ensure()
    await container.stop()
