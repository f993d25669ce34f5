"""inference.mode container: the node starts Ollama itself, in a Podman container.

The container keeps its models in a named volume (kept across node restarts: models are
large and slow to pull), gets the GPU devices the host has, and publishes Ollama's port
on 127.0.0.1 only, where the node's relay reaches it. It is not a job: it carries no
node label, so leftover cleanup never touches it; the node reuses a running one and
stops it when the node stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from podman import PodmanClient
from podman.errors import NotFound

from ..runtime import ops
from ..runtime.labels import LABEL_ROLE
from .check import InferenceUnavailable

OLLAMA_PORT = 11434
CONTAINER_NAME = "cynode-ollama"
MODELS_DIR = "/root/.ollama"
# NVIDIA and AMD device nodes Ollama uses when they exist on the host.
GPU_DEVICES = (
    "/dev/nvidia0",
    "/dev/nvidiactl",
    "/dev/nvidia-uvm",
    "/dev/nvidia-uvm-tools",
    "/dev/kfd",
    "/dev/dri",
)


def gpu_devices(candidates: tuple[str, ...] = GPU_DEVICES) -> list[str]:
    return [path for path in candidates if Path(path).exists()]


def ollama_create_kwargs(
    image: str,
    *,
    name: str,
    models_volume: str,
    host_port: int,
    devices: list[str],
    command: list[str] | None = None,
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "image": image,
        "name": name,
        "labels": {LABEL_ROLE: "inference"},
        "environment": {"OLLAMA_HOST": f"0.0.0.0:{OLLAMA_PORT}"},
        "volumes": {models_volume: {"bind": MODELS_DIR, "mode": "rw"}},
        "ports": {f"{OLLAMA_PORT}/tcp": ("127.0.0.1", host_port)},
        "devices": devices,
        "init": True,
        "stop_timeout": 5,
        "log_config": {"Type": "k8s-file"},
    }
    if command is not None:
        kwargs["command"] = command
    return kwargs


class OllamaContainer:
    """ensure() makes sure Ollama runs in its container and answers; returns its URL."""

    def __init__(
        self,
        client: Callable[[], PodmanClient],
        *,
        image: str,
        models_volume: str,
        url: str,
        name: str = CONTAINER_NAME,
        command: list[str] | None = None,
        ready_timeout_s: float = 60.0,
    ) -> None:
        self._client = client
        self.image = image
        self.models_volume = models_volume
        self.host_port = urlsplit(url).port or OLLAMA_PORT
        self.url = f"http://127.0.0.1:{self.host_port}"
        self.name = name
        self.command = command
        self.ready_timeout_s = ready_timeout_s
        self.container_id: str | None = None

    async def ensure(self) -> str:
        client = self._client()
        if not await asyncio.to_thread(client.images.exists, self.image):
            raise InferenceUnavailable(
                f"inference image {self.image} is missing on this node: "
                f"`podman pull {self.image}` (or `podman load`), or set inference.image"
            )
        self.container_id = await asyncio.to_thread(self._ensure_running, client)
        await self._wait_answering(client)
        return self.url

    def _ensure_running(self, client: PodmanClient) -> str:
        try:
            found = client.containers.get(self.name)
        except NotFound:
            found = None
        if found is not None:
            if found.status == "running":
                return str(found.id)
            # A stopped one may have other settings; the models live in the volume.
            ops.remove_container(client, str(found.id))
        if not client.volumes.exists(self.models_volume):
            client.volumes.create(self.models_volume, labels={LABEL_ROLE: "inference-models"})
        kwargs = ollama_create_kwargs(
            self.image,
            name=self.name,
            models_volume=self.models_volume,
            host_port=self.host_port,
            devices=gpu_devices(),
            command=self.command,
        )
        container = client.containers.create(**kwargs)
        container.start()
        return str(container.id)

    async def _wait_answering(self, client: PodmanClient) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        async with httpx.AsyncClient(timeout=2.0) as http:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{self.url}/api/tags")).status_code == 200:
                        return
                assert self.container_id is not None
                state = await asyncio.to_thread(ops.exit_state, client, self.container_id)
                running = await asyncio.to_thread(self._running, client)
                if not running:
                    raise InferenceUnavailable(
                        f"inference container {self.name} exited ({state.exit_code})"
                    )
                if time.monotonic() > deadline:
                    raise InferenceUnavailable(
                        f"inference container {self.name} did not answer on {self.url} "
                        f"within {self.ready_timeout_s:g}s"
                    )
                await asyncio.sleep(0.2)

    def _running(self, client: PodmanClient) -> bool:
        assert self.container_id is not None
        try:
            return str(client.containers.get(self.container_id).status) == "running"
        except NotFound:
            return False

    async def stop(self) -> None:
        container_id, self.container_id = self.container_id, None
        if container_id is not None:
            await asyncio.to_thread(ops.remove_container, self._client(), container_id)
