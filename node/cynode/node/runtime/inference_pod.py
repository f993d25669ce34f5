"""One inference pod on Podman: a volume for the proxy's socket, the loopback-only pod and
the proxy sidecar, and how to remove them.

The warm pool (warm_pool.py) makes one ahead of time, while the node is idle; a pod
serves exactly one job and is removed after it (a job that finds none runs its sandbox
alone, its proxy in the node's proxy host, job_proxy.py). Nothing in the
pod depends on the job but names and labels: the sidecar's command comes from the node's
InferencePodSettings alone, and the job's model goes into the sandbox's env.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from podman import PodmanClient
from podman.domain.containers import Container

from cynode.node.runtime import ops
from cynode.node.runtime.proxy_probe import (
    ProxyNotReady,
    proxy_answers,
    wait_for_proxy,
)
from cynode.node.runtime.proxy_sidecar import (
    PROXY_SOCKET_NAME,
    pod_create_kwargs,
    shared_volume_options,
    sidecar_create_kwargs,
)
from cynode.node.runtime.settings import InferencePodSettings

log = logging.getLogger(__name__)

# role -> the labels of the piece with that role ("pod", "proxy", "inference-volume").
Labeller = Callable[[str], dict[str, str]]


async def require_relay(settings: InferencePodSettings) -> None:
    """ProxyNotReady when the node's relay socket (the sidecar's only way out) is missing."""
    relay = Path(settings.relay_socket)
    if not await asyncio.to_thread(relay.is_socket):
        raise ProxyNotReady(f"inference relay socket {relay} is missing")


class InferencePod:
    """The pieces are named cynode-{pod,inf,proxy}-<stem> and each is recorded as soon as
    it exists, so `remove()` copes with a creation that failed half way."""

    def __init__(
        self,
        client: PodmanClient,
        settings: InferencePodSettings,
        *,
        stem: str,
        labels: Labeller,
    ) -> None:
        self.client = client
        self.settings = settings
        self.pod_name = f"cynode-pod-{stem}"
        self.volume_name = f"cynode-inf-{stem}"
        self.sidecar_name = f"cynode-proxy-{stem}"
        self._labels = labels
        self.pod_id: str | None = None
        self.volume_created = False
        self.mountpoint = ""
        self.sidecar_id: str | None = None
        # Done once the sidecar runs, which also starts the pod's infra container.
        self.sidecar_start: asyncio.Future[str] | None = None

    async def create(self) -> None:
        """The volume and the pod, at the same time (they are independent); both calls
        end before a failure of either is raised. Raises ProxyNotReady without making
        anything when the node's relay socket is missing."""
        await require_relay(self.settings)
        client = self.client

        def create_volume() -> None:
            volume = client.volumes.create(
                self.volume_name,
                labels=self._labels("inference-volume"),
                driver_opts=shared_volume_options(self.settings.userns),
            )
            self.volume_created = True
            self.mountpoint = str(volume.attrs["Mountpoint"])

        def create_pod() -> None:
            pod = client.pods.create(
                self.pod_name, **pod_create_kwargs(self._labels("pod"), self.settings.userns)
            )
            self.pod_id = str(pod.id)

        both = asyncio.gather(
            asyncio.to_thread(create_volume), asyncio.to_thread(create_pod), return_exceptions=True
        )
        try:
            made = await asyncio.shield(both)
        except asyncio.CancelledError:
            # The threads run on regardless: let them record what they made, so that
            # remove() finds it, before giving up.
            await asyncio.wait({both})
            raise
        for outcome in made:
            if isinstance(outcome, BaseException):
                raise outcome

    def start_sidecar(self) -> asyncio.Future[str]:
        """Creates and starts the sidecar on a thread; the future is its container id.

        The creation is left to finish even when whoever awaits it gives up (`remove`
        waits for it), so the pod is never removed while a container is put into it.
        """
        assert self.pod_id is not None, "create() first"
        relay = Path(self.settings.relay_socket)
        kwargs = sidecar_create_kwargs(
            self.settings,
            labels=self._labels("proxy"),
            name=self.sidecar_name,
            pod=self.pod_id,
            shared_volume=self.volume_name,
            relay_dir=str(relay.parent),
            relay_socket_name=relay.name,
        )
        client = self.client

        def create_and_start() -> str:
            container: Container = client.containers.create(**kwargs)
            self.sidecar_id = container.id
            ops.start_container(client, container.id)
            return str(container.id)

        self.sidecar_start = asyncio.ensure_future(asyncio.to_thread(create_and_start))
        return self.sidecar_start

    async def wait_answering(self) -> None:
        """Until the sidecar's proxy answers GET /healthz (ProxyNotReady when it died or
        the ready timeout passed; the sidecar's log tail then goes to the node's log)."""
        start = self.sidecar_start
        assert start is not None, "start_sidecar() first"
        await asyncio.shield(start)
        try:
            await wait_for_proxy(
                self.mountpoint,
                PROXY_SOCKET_NAME,
                timeout_s=self.settings.ready_timeout_s,
                still_running=self._sidecar_running,
            )
        except ProxyNotReady:
            log.warning("%s: sidecar log: %s", self.pod_name, await self.log_tail())
            raise

    async def answers(self) -> bool:
        """One probe: the proxy answers now."""
        return bool(self.mountpoint) and await proxy_answers(self.mountpoint, PROXY_SOCKET_NAME)

    async def _sidecar_running(self) -> bool:
        if self.sidecar_id is None:
            return False
        state = await asyncio.to_thread(self.client.containers.get, self.sidecar_id)
        return str(state.status) == "running"

    async def log_tail(self) -> str:
        if self.sidecar_id is None:
            return ""
        return await asyncio.to_thread(ops.log_tail, self.client, self.sidecar_id)

    async def settle_start(self) -> None:
        """Returns once no sidecar creation is in flight (its failure, if any, was
        reported through wait_answering)."""
        start, self.sidecar_start = self.sidecar_start, None
        if start is not None:
            await asyncio.wait({start})
            if not start.cancelled():
                start.exception()  # retrieved, so asyncio does not report it lost

    async def remove(self) -> None:
        """The pod (with the sidecar, the infra container and whatever else joined it),
        then the volume; quiet about pieces already gone."""
        await self.settle_start()
        if self.pod_id is not None:
            await asyncio.to_thread(ops.remove_pod, self.client, self.pod_id)
            self.pod_id = None
        if self.volume_created:
            await asyncio.to_thread(ops.remove_volume, self.client, self.volume_name)
            self.volume_created = False
