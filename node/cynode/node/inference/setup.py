"""The node's side of inference, by `inference.mode`:

- none:      nothing runs; jobs that need inference are refused (the orchestrator never
             sends them: the capability report says inference is not supported);
- existing:  Ollama at `inference.url` must answer /api/tags; the relay forwards to it;
- container: the node starts Ollama in a container (ollama_container.py), then as above.

Once Ollama answers, the relay socket is up, then the proxy host (proxy_host.py; cold
jobs' proxies), and `pod_settings()` tells the job runner how to build inference pods.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from podman import PodmanClient

from ..capability import InferenceStatus
from ..config import NodeConfig
from ..runtime.job_proxy import job_proxy_root
from ..runtime.labels import LABEL_NODE_ID, LABEL_ROLE
from ..runtime.settings import InferencePodSettings
from .check import check_inference
from .ollama_container import OllamaContainer
from .proxy_host import ProxyHost, control_socket
from .relay import RELAY_TIMEOUT_MARGIN_S, InferenceRelay, relay_dir

log = logging.getLogger(__name__)


class NodeInference:
    def __init__(
        self,
        config: NodeConfig,
        podman: Callable[[], PodmanClient],
        *,
        relay_directory: Path | None = None,
        container_command: list[str] | None = None,
    ) -> None:
        self.config = config
        self.mode = config.inference_mode
        self.upstream = config.inference_url
        self.podman = podman
        self.container: OllamaContainer | None = None
        if self.mode == "container":
            self.container = OllamaContainer(
                podman,
                image=config.inference_image,
                models_volume=config.inference_models_volume,
                url=config.inference_url,
                command=container_command,
            )
        self.relay: InferenceRelay | None = None
        self._relay_directory = relay_directory
        # Cold jobs' socket directories (job_proxy.py); cleaned at node start.
        self.job_socket_dir = job_proxy_root(config.state_dir)
        self.proxy_host: ProxyHost | None = None
        self.proxy_host_socket = control_socket(config.state_dir)
        # Why the proxy host is not up yet ("" once it is, or before the first start).
        self.proxy_host_error = ""

    async def start(self, node_id: str = "") -> InferenceStatus:
        """Brings inference up (idempotent, so a failed start-up step can retry it).
        The proxy host is started with the node's label (`node_id`); when it does not
        come up the node keeps trying in the background (`proxy_host_error`)."""
        if self.mode == "none":
            return InferenceStatus(running=False)
        if self.container is not None:
            self.upstream = await self.container.ensure()
        status = await check_inference(self.mode, self.upstream)
        if self.relay is None:
            directory = self._relay_directory or relay_dir(self.config.state_dir)
            self.relay = InferenceRelay(
                directory,
                self.upstream,
                timeout_s=self.config.inference_proxy_timeout_s + RELAY_TIMEOUT_MARGIN_S,
            )
        await self.relay.start()
        if self.proxy_host is None:
            settings = self._settings()
            labels = {LABEL_ROLE: "proxy-host"}
            if node_id:
                labels[LABEL_NODE_ID] = node_id
            self.proxy_host = ProxyHost(
                self.podman, settings, labels=labels, jobs=self.config.max_concurrency
            )
            self.proxy_host_error = await self.proxy_host.ensure()
        return status

    def _settings(self, default_model: str = "") -> InferencePodSettings:
        assert self.relay is not None
        return InferencePodSettings(
            relay_socket=str(self.relay.socket_path),
            proxy_image=self.config.inference_proxy_image,
            proxy_timeout_s=self.config.inference_proxy_timeout_s,
            default_model=self.config.inference_default_model or default_model,
            sandbox_tcp=self.config.inference_sandbox_tcp,
            userns=self.config.sandbox_userns,
            proxy_host_socket=str(self.proxy_host_socket),
            job_max_connections=self.config.inference_job_max_connections,
            job_socket_dir=str(self.job_socket_dir),
        )

    def pod_settings(self, default_model: str = "") -> InferencePodSettings | None:
        """How to run inference pods, once the relay runs; None before or in mode none."""
        if self.relay is None or not self.relay.running:
            return None
        return self._settings(default_model)

    async def close(self) -> None:
        host, self.proxy_host = self.proxy_host, None
        if host is not None:
            try:
                await host.close()
            except Exception:
                log.exception("could not remove the proxy host")
        relay, self.relay = self.relay, None
        if relay is not None:
            await relay.close()
        if self.container is not None:
            try:
                await self.container.stop()
            except Exception:
                log.exception("could not stop the inference container")
