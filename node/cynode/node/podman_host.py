"""The daemon's container host on real Podman: the service (private or existing socket),
image checks, leftover cleanup, and one `JobRunner` per job."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from pathlib import Path

from podman import PodmanClient

from .config import NodeConfig
from .jobs import OnOutput, OnStarted, Runner, RunnerFactory
from .runtime import JobRunner, PodmanService, SandboxSettings, remove_leftovers
from .state import ensure_private_dir

# sun_path holds 108 bytes; keep the socket path safely under it.
_MAX_SOCKET_PATH = 100


def private_runtime_dir(state_dir: Path) -> Path:
    preferred = state_dir / "podman"
    if len(str(preferred / "podman.sock")) <= _MAX_SOCKET_PATH:
        return preferred
    return Path(tempfile.mkdtemp(prefix="cynode-podman-"))


class PodmanHost:
    def __init__(self, config: NodeConfig, *, start_timeout_s: float = 30.0) -> None:
        self.config = config
        self.start_timeout_s = start_timeout_s
        self.service: PodmanService | None = None
        self.client: PodmanClient | None = None

    def _make_service(self) -> PodmanService:
        if self.config.podman_socket:
            return PodmanService.existing(self.config.podman_socket)
        conf = self.config.effective_containers_conf
        # The private service lives in the state dir: make it ours and 0700 first.
        ensure_private_dir(self.config.state_dir)
        return PodmanService(
            private_runtime_dir(self.config.state_dir),
            containers_conf=Path(conf) if conf else None,
        )

    async def start(self) -> str:
        """Starts (or finds) the service; the version it reports proves it answers."""
        if self.service is None:
            service = self._make_service()
            await service.astart(self.start_timeout_s)
            self.service = service
            self.client = service.client(timeout=60)
        client = self._client()
        info = await asyncio.to_thread(client.version)
        return str(info.get("Version", "")) or "unknown"

    def _client(self) -> PodmanClient:
        if self.client is None:
            raise RuntimeError("the Podman service is not started")
        return self.client

    async def image_exists(self, image: str) -> bool:
        return bool(await asyncio.to_thread(self._client().images.exists, image))

    async def remove_leftovers(self, node_id: str) -> int:
        report = await remove_leftovers(self._client(), node_id)
        return report.total

    def runner_factory(self, settings: Callable[[], SandboxSettings]) -> RunnerFactory:
        def make(on_output: OnOutput, on_started: OnStarted) -> Runner:
            return JobRunner(self._client(), settings(), on_output=on_output, on_started=on_started)

        return make

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            client.close()  # type: ignore[no-untyped-call]
        service, self.service = self.service, None
        if service is not None:
            await service.astop()
