"""Smoke: the Podman fixture runs a real container with no network through podman-py."""

from __future__ import annotations

import pytest
from podman import PodmanClient

from cynode.node.runtime import PodmanService
from tests.fixtures.podman import SANDBOX_IMAGE

pytestmark = pytest.mark.podman


def test_echo_hi_without_network(podman_client: PodmanClient) -> None:
    container = podman_client.containers.create(
        SANDBOX_IMAGE, ["echo", "hi"], network_mode="none", labels={"cynode.test": "smoke"}
    )
    try:
        container.start()
        assert container.wait() == 0
        logs = container.logs(stdout=True, stderr=False)
        output = logs if isinstance(logs, bytes) else b"".join(logs)
        container.reload()
        network_mode = container.attrs["HostConfig"]["NetworkMode"]
    finally:
        container.remove(force=True)
    assert output == b"hi\n"
    assert network_mode == "none"


def test_service_answers_on_its_private_socket(podman_service: PodmanService) -> None:
    assert podman_service.socket_path.is_socket()
    assert podman_service.uri == f"unix://{podman_service.socket_path}"
    assert podman_service.ping()
