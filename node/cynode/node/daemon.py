"""`NodeDaemon(config).run()`: the worker node's start-up sequence and its life after.

Start-up follows the SPEC, each a named step in `Readiness` (so /readyz names the one
that failed or is pending): config → register → fetch_config → apply_config →
ack_config → runtime → images → cleanup → inference → dispatch. A failed step is
retried with backoff from that step on; the worker API answers from the first moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Protocol

import grpc
from podman import PodmanClient

from cynode.controlplane.v1 import nodes_pb2

from .applied_config import AppliedConfig, ConfigRejected, apply_node_config
from .artifacts import ArtifactSpool, ArtifactUploader
from .backoff import Backoff
from .capability import InferenceStatus, build_report
from .config import NodeConfig
from .cpclient import ControlPlaneClient, make_channel, tls_hint
from .dispatch import DispatchClient
from .host_binaries import podman_version
from .inference import InferenceUnavailable, NodeInference
from .inference.link import InferenceLink
from .job_worker import RunnerFactory
from .metrics import NodeMetrics
from .readiness import Readiness, StepState
from .runtime.job_proxy import remove_job_dirs
from .runtime.settings import SandboxSettings
from .runtime.userns import FIX as USERNS_FIX
from .runtime.userns import SUBID_USER, missing_ranges
from .runtime.warm_pool import WarmStatus
from .runtime.workspace_image import remove_images
from .spool import ResultSpool
from .state import StateDir
from .worker_api import WorkerApiServer, build_app, worker_api_tls

log = logging.getLogger(__name__)


class StepFailed(RuntimeError):
    pass


class ContainerHost(Protocol):
    """The node's container runtime as the daemon needs it (see podman_host.py)."""

    async def start(self) -> str:
        """Makes sure the service answers; returns the Podman version."""
        ...

    async def image_exists(self, image: str) -> bool: ...

    async def remove_leftovers(self, node_id: str) -> int: ...

    def runner_factory(self, settings: Callable[[], SandboxSettings]) -> RunnerFactory: ...

    def keep_warm(self, settings: SandboxSettings) -> None:
        """Prepare what jobs with these settings need ahead of time (warm sandboxes and
        pods)."""
        ...

    def warm_status(self) -> list[WarmStatus]:
        """The warm pools now (metrics, the capability report, Ready)."""
        ...

    async def close(self) -> None: ...


def _default_host(config: NodeConfig) -> ContainerHost:
    from .podman_host import PodmanHost

    return PodmanHost(config)


class NodeDaemon:
    def __init__(
        self,
        config: NodeConfig,
        *,
        host: ContainerHost | None = None,
        channel: grpc.aio.Channel | None = None,
        serve_api: bool = True,
    ) -> None:
        self.config = config
        self.readiness = Readiness()
        self.metrics = NodeMetrics()
        self.state = StateDir(config.state_dir)
        self.host = host or _default_host(config)
        # Looked up at each scrape: the host is the one home of its pools.
        self.metrics.watch_warm(lambda: self.host.warm_status())
        self._channel = channel
        self._serve_api = serve_api
        self.api: WorkerApiServer | None = None
        self.cp: ControlPlaneClient | None = None
        self.dispatch: DispatchClient | None = None
        self.uploader: ArtifactUploader | None = None
        self.link: InferenceLink | None = None
        self.applied: AppliedConfig | None = None
        self.podman_version = ""
        self.inference = InferenceStatus()
        self.node_inference = NodeInference(config, self._podman_client)
        self._fetched: nodes_pb2.GetNodeConfigResponse | None = None
        self._base = self._base_settings()
        self._stop = asyncio.Event()
        self._backoff = Backoff(config.reconnect_initial_s, config.reconnect_max_s)

    # -- life cycle -------------------------------------------------------------------

    async def run(self) -> None:
        """Serves until `stop()`: start-up steps (retried), then the dispatch stream."""
        try:
            await self.start_api()
            if await self.start_up():
                await self._serve_dispatch()
        finally:
            await self._shutdown()

    def stop(self) -> None:
        self._stop.set()

    async def start_api(self) -> None:
        if not self._serve_api:
            return
        app = build_app(self.readiness, self.metrics, self._max_request_bytes)
        self.api = WorkerApiServer(
            app,
            self.config.worker_api_host,
            self.config.worker_api_port,
            tls=worker_api_tls(self.config),
        )
        await self.api.start()

    def _max_request_bytes(self) -> int:
        return self.applied.max_request_bytes if self.applied else 10 * 1024 * 1024

    async def start_up(self) -> bool:
        """Runs every step in order; False when stopped before the sequence completed."""
        self.readiness.passed("config", f"node {self.config.node_slug}")
        steps: list[tuple[str, Callable[[], Awaitable[str]]]] = [
            ("register", self._register),
            ("fetch_config", self._fetch_config),
            ("apply_config", self._apply_config),
            ("ack_config", self._ack_config),
            ("runtime", self._runtime),
            ("images", self._images),
            ("cleanup", self._cleanup),
            ("inference", self._inference),
        ]
        index = 0
        while index < len(steps):
            name, step = steps[index]
            if self.readiness.steps[name].state is not StepState.FAILED:
                # A retried step keeps saying why it failed until it passes.
                self.readiness.running(name)
            try:
                detail = await step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                message = _describe(exc, self.config)
                log.error("start-up step %s failed: %s", name, message)
                self.readiness.failed(name, message)
                # fetch/apply/ack form one unit: a retry starts again at fetch.
                if name in ("apply_config", "ack_config"):
                    index = 1
                if await self._sleep_or_stop(self._backoff.next_delay()):
                    return False
                continue
            self.readiness.passed(name, detail)
            index += 1
        self._backoff.reset()
        return not self._stop.is_set()

    async def _sleep_or_stop(self, delay: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay)
        return self._stop.is_set()

    async def _serve_dispatch(self) -> None:
        assert self.cp is not None and self.applied is not None
        results = ResultSpool(self.state.spool_dir)
        artifacts = ArtifactSpool(self.state.artifact_dir)
        artifacts.remove_partials()
        self.uploader = ArtifactUploader(
            self.cp.channel,
            self.cp,
            artifacts,
            results,
            backoff=Backoff(self.config.reconnect_initial_s, self.config.reconnect_max_s),
        )
        self.dispatch = DispatchClient(
            node_slug=self.config.node_slug,
            channel=self.cp.channel,
            auth=self.cp,
            spool=results,
            runner_factory=self.host.runner_factory(self._settings),
            max_concurrency=self.config.max_concurrency,
            readiness=self.readiness,
            metrics=self.metrics,
            backoff=Backoff(self.config.reconnect_initial_s, self.config.reconnect_max_s),
            config_version=lambda: self.applied.config_version if self.applied else "",
            on_config_changed=self.on_config_changed,
            warm_ready=self._warm_ready,
            on_results_acked=self.uploader.wake,
        )
        # Idle until the first assignment: the time to make the first warm pod.
        self.host.keep_warm(self._settings())
        await self._report_warm()
        self.readiness.running("dispatch", "connecting")
        runner = asyncio.create_task(self.dispatch.run())
        uploads = asyncio.create_task(self.uploader.run(), name="artifact-uploads")
        stopper = asyncio.create_task(self._stop.wait())
        linker = self._start_link()
        try:
            await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if self.link is not None:
                await self.link.stop()
            await self.dispatch.stop()
            runner.cancel()
            uploads.cancel()
            stopper.cancel()
            for task in (runner, uploads):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if linker is not None:
                linker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await linker

    def _start_link(self) -> asyncio.Task[None] | None:
        """The inference link (SPEC §7.12), when the node serves models."""
        if self.config.inference_mode == "none" or self.node_inference.relay is None:
            return None
        assert self.cp is not None
        relay = self.node_inference.relay
        self.link = InferenceLink(
            node_slug=self.config.node_slug,
            channel=self.cp.channel,
            auth=self.cp,
            relay=lambda: relay if relay.running else None,
            capability=lambda: self.capability().inference,
            allowed_models=lambda: self.applied.allowed_models if self.applied else (),
            backoff=Backoff(self.config.reconnect_initial_s, self.config.reconnect_max_s),
            timeout_s=self.config.inference_proxy_timeout_s,
        )
        return asyncio.create_task(self.link.run())

    async def _shutdown(self) -> None:
        if self.api is not None:
            await self.api.stop()
        # Before the host: a node-started Ollama container is removed through its client.
        with contextlib.suppress(Exception):
            await self.node_inference.close()
        with contextlib.suppress(Exception):
            await self.host.close()
        if self.cp is not None and self._channel is None:
            await self.cp.channel.close(grace=None)

    def _base_settings(self, node_id: str = "") -> SandboxSettings:
        return SandboxSettings(
            image=self.config.sandbox_image,
            node_id=node_id,
            artifact_dir=str(self.state.artifact_dir),
            workspace_mb=self.config.workspace_mb,
            workspace_dir=str(self.state.workspace_dir),
            userns=self.config.sandbox_userns,
            artifact_max_file_bytes=self.config.artifacts_max_file_mb * 1024 * 1024,
            artifact_max_job_bytes=self.config.artifacts_max_job_mb * 1024 * 1024,
        )

    def _settings(self) -> SandboxSettings:
        settings = self.applied.settings if self.applied else self._base
        default_model = self.applied.default_model if self.applied else ""
        pod = self.node_inference.pod_settings(default_model)
        return replace(settings, inference=pod) if pod is not None else settings

    def _podman_client(self) -> PodmanClient:
        client = getattr(self.host, "client", None)
        if not isinstance(client, PodmanClient):
            raise InferenceUnavailable("inference mode container needs the node's Podman service")
        return client

    # -- the steps --------------------------------------------------------------------

    def capability(self) -> nodes_pb2.CapabilityReport:
        return build_report(
            self.config,
            podman_version=self.podman_version,
            inference=self.inference,
            warm=self.host.warm_status(),
        )

    def _warm_ready(self) -> int:
        return sum(s.available for s in self.host.warm_status() if s.kind == "sandbox")

    async def _report_warm(self) -> None:
        """The capability report again, now with the warm sandboxes' class and size."""
        if self.cp is None or not any(s.size for s in self.host.warm_status()):
            return
        try:
            await self.cp.report_capability()
        except Exception as exc:  # the register-time report stands; warm is a preference
            log.warning("could not report the warm sandboxes: %s", _describe(exc))

    async def _register(self) -> str:
        self.state.prepare()
        if self.cp is None:
            self.podman_version = await podman_version()
            channel = self._channel or make_channel(self.config)
            self.cp = ControlPlaneClient(self.config, channel, self.state, self.capability)
        response = await self.cp.register()
        self._base = self._base_settings(response.node_id)
        return f"node_id={response.node_id}"

    async def _fetch_config(self) -> str:
        assert self.cp is not None
        self._fetched = await self.cp.get_config()
        return f"config_version={self._fetched.config_version}"

    async def _apply_config(self) -> str:
        assert self.cp is not None and self._fetched is not None
        try:
            self.applied = apply_node_config(self._fetched, self._base)
        except ConfigRejected as exc:
            await self.cp.ack_config(self._fetched.config_version, error=str(exc))
            raise
        return f"image={self.applied.settings.image}"

    async def _ack_config(self) -> str:
        assert self.cp is not None and self.applied is not None
        await self.cp.ack_config(self.applied.config_version)
        return f"applied {self.applied.config_version}"

    async def _runtime(self) -> str:
        if self.config.sandbox_userns == "auto":
            missing = await asyncio.to_thread(missing_ranges)
            if missing:
                # Without a range Podman could not start a single sandbox.
                raise StepFailed(
                    f"sandbox.userns is auto but {' and '.join(missing)} give the "
                    f"`{SUBID_USER}` user no range: {USERNS_FIX}"
                )
        self.podman_version = await self.host.start()
        return f"podman {self.podman_version}, userns {self.config.sandbox_userns}"

    async def _images(self) -> str:
        image = self._settings().image
        if not await self.host.image_exists(image):
            raise StepFailed(f"image {image} is missing: run `make images`")
        return image

    async def _cleanup(self) -> str:
        removed = await self.host.remove_leftovers(self._base.node_id)
        # After the volumes: an image goes once nothing mounts it.
        images = await asyncio.to_thread(remove_images, self.state.workspace_dir)
        sockets = await asyncio.to_thread(remove_job_dirs, self.node_inference.job_socket_dir)
        return (
            f"removed {removed} leftover container(s), {images} workspace image(s), "
            f"{sockets} job socket dir(s)"
        )

    async def _inference(self) -> str:
        if self.config.inference_mode != "none":
            image = self.config.inference_proxy_image
            if not await self.host.image_exists(image):
                raise StepFailed(f"image {image} is missing: run `make images`")
        status = await self.node_inference.start(self._base.node_id)
        if status != self.inference:
            self.inference = status
            assert self.cp is not None
            await self.cp.report_capability()
        if self.config.inference_mode == "none":
            return "skipped (mode none)"
        names = ", ".join(status.models[:5]) or "none"
        host = self.node_inference.proxy_host_error
        # Not a failed step: warm pods serve meanwhile, cold jobs fail clearly.
        down = f"; proxy host down, retrying: {host}" if host else ""
        return f"{self.config.inference_mode}: {len(status.models)} model(s) ({names}){down}"

    # -- config changes while running -------------------------------------------------

    async def on_config_changed(self, config_version: str) -> None:
        """Refetch, apply, check the image, ack; a failure keeps the old settings."""
        assert self.cp is not None
        fetched = await self.cp.get_config()
        if self.applied and fetched.config_version == self.applied.config_version:
            return
        try:
            applied = apply_node_config(fetched, self._base)
            if not await self.host.image_exists(applied.settings.image):
                raise ConfigRejected(f"image {applied.settings.image} is missing on this node")
        except ConfigRejected as exc:
            log.warning("config %s rejected: %s", fetched.config_version, exc)
            await self.cp.ack_config(fetched.config_version, error=str(exc))
            return
        allowed_before = self.applied.allowed_models if self.applied else ()
        self.applied = applied
        if self.link is not None and applied.allowed_models != allowed_before:
            # The orchestrator must hear what the node serves now.
            self.link.announce()
        # Pods and sandboxes made for settings that changed are discarded, new ones made.
        self.host.keep_warm(self._settings())
        await self.cp.ack_config(applied.config_version)
        await self._report_warm()
        log.info("applied config %s", applied.config_version)


def _describe(exc: BaseException, config: NodeConfig | None = None) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        text = f"{exc.code().name}: {exc.details() or ''}".rstrip(": ")
        hint = tls_hint(config, exc.details() or "") if config is not None else ""
        return f"{text} ({hint})" if hint else text
    return str(exc) or type(exc).__name__
