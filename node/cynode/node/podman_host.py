"""The daemon's container host on real Podman: the service (private or existing socket),
image checks, leftover cleanup, the warm inference pods and warm sandboxes, and one
`JobRunner` per job.

Runners release in the background (the result goes out before the removal of the job's
containers and pod; the job worker keeps the slot until `released()`), and take their
inference pod or their sandbox from the warm pools when they have one ready.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from podman import PodmanClient

from .config import NodeConfig
from .job_worker import OnOutput, OnStarted, Runner, RunnerFactory
from .runtime import JobRunner, PodmanService, SandboxSettings, remove_leftovers
from .runtime.warm_pool import WarmPodPool, WarmStatus
from .runtime.warm_sandbox import WarmSandboxPool
from .state import ensure_private_dir, socket_dir


def private_runtime_dir(state_dir: Path) -> Path:
    return socket_dir(state_dir / "podman", "podman.sock", "cynode-podman-")


class PodmanHost:
    def __init__(self, config: NodeConfig, *, start_timeout_s: float = 30.0) -> None:
        self.config = config
        self.start_timeout_s = start_timeout_s
        self.service: PodmanService | None = None
        self.client: PodmanClient | None = None
        self.warm_pods: WarmPodPool | None = None
        self.warm_sandboxes: WarmSandboxPool | None = None

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
            self.warm_pods = WarmPodPool(self.client, size=self.config.inference_warm_pods)
            self.warm_sandboxes = WarmSandboxPool(
                self.client,
                size=self.config.sandbox_warm_containers,
                max_jobs=self.config.max_concurrency,
                idle_s=self.config.sandbox_warm_idle_s,
            )
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

    def keep_warm(self, settings: SandboxSettings) -> None:
        """Have warm sandboxes and inference pods made for these settings while the node
        is idle (each a no-op when its size is 0; pods also without inference)."""
        if self.warm_sandboxes is not None:
            self.warm_sandboxes.fill(settings)
        if self.warm_pods is not None:
            self.warm_pods.fill(settings)

    def warm_status(self) -> list[WarmStatus]:
        pools: list[WarmPodPool | WarmSandboxPool | None] = [self.warm_sandboxes, self.warm_pods]
        return [pool.status() for pool in pools if pool is not None]

    def runner_factory(self, settings: Callable[[], SandboxSettings]) -> RunnerFactory:
        def make(on_output: OnOutput, on_started: OnStarted) -> Runner:
            return JobRunner(
                self._client(),
                settings(),
                on_output=on_output,
                on_started=on_started,
                warm_pods=self.warm_pods,
                warm_sandboxes=self.warm_sandboxes,
                background_release=True,
            )

        return make

    async def close(self) -> None:
        sandboxes, self.warm_sandboxes = self.warm_sandboxes, None
        if sandboxes is not None:
            await sandboxes.close()
        pool, self.warm_pods = self.warm_pods, None
        if pool is not None:
            await pool.close()
        client, self.client = self.client, None
        if client is not None:
            client.close()  # type: ignore[no-untyped-call]
        service, self.service = self.service, None
        if service is not None:
            await service.astop()
