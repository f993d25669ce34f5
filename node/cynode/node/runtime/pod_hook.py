"""The inference pod: shared volume, pod and proxy sidecar, ready before the sandbox.

prestart creates a labelled volume for the proxy's socket, the loopback-only pod and
the sidecar, starts the sidecar, and tells the container hook to put the sandbox into
the pod with the inference env. While the sandbox container is created and its inputs
written, the proxy starts; ProxyReadyHook, the last prestart, waits until it answers.
poststop (after the sandbox container is gone) removes the pod, which takes the sidecar
and the infra container with it, then the volume.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from podman.domain.containers import Container

from cynode.node.runtime import ops
from cynode.node.runtime.context import JobContext
from cynode.node.runtime.hooks import Hook
from cynode.node.runtime.labels import job_labels
from cynode.node.runtime.proxy_probe import ProxyNotReady, wait_for_proxy
from cynode.node.runtime.proxy_sidecar import (
    PROXY_SOCKET_NAME,
    inference_env,
    job_model,
    pod_create_kwargs,
    sandbox_shared_volume,
    shared_volume_options,
    sidecar_create_kwargs,
)
from cynode.node.runtime.settings import InferencePodSettings

log = logging.getLogger(__name__)
_LOG_TAIL_BYTES = 2000


def _derived_name(ctx: JobContext, kind: str) -> str:
    # Same job id, attempt and random suffix as the sandbox container's name.
    return ctx.container_name.replace("cynode-job-", f"cynode-{kind}-", 1)


class InferencePodHook(Hook):
    name = "inference-pod"

    def __init__(self, settings: InferencePodSettings) -> None:
        self.settings = settings
        self.pod_name = ""
        self.volume_name = ""
        self.pod_id: str | None = None
        self.volume_created = False
        self.sidecar_id: str | None = None
        self.ready: asyncio.Task[None] | None = None
        self.sidecar_start: asyncio.Future[str] | None = None
        self.early_removal: asyncio.Task[None] | None = None

    async def prestart(self, ctx: JobContext) -> None:
        relay = Path(self.settings.relay_socket)
        if not await asyncio.to_thread(relay.is_socket):
            raise ProxyNotReady(f"inference relay socket {relay} is missing")
        self.pod_name = _derived_name(ctx, "pod")
        self.volume_name = _derived_name(ctx, "inf")
        node_id = ctx.settings.node_id
        client = ctx.client

        def create_volume() -> str:
            labels = job_labels(ctx.spec, node_id, role="inference-volume")
            volume = client.volumes.create(
                self.volume_name, labels=labels, driver_opts=shared_volume_options()
            )
            self.volume_created = True
            return str(volume.attrs["Mountpoint"])

        def create_pod() -> None:
            pod = client.pods.create(self.pod_name, **pod_create_kwargs(ctx.spec, node_id))
            self.pod_id = str(pod.id)

        # Independent, so made at the same time; each is recorded for poststop as soon as
        # it exists, and both calls end before a failure of either is raised.
        made = await asyncio.gather(
            asyncio.to_thread(create_volume), asyncio.to_thread(create_pod), return_exceptions=True
        )
        for outcome in made:
            if isinstance(outcome, BaseException):
                raise outcome
        mountpoint = str(made[0])
        assert self.pod_id is not None
        kwargs = sidecar_create_kwargs(
            ctx.spec,
            self.settings,
            node_id=node_id,
            name=_derived_name(ctx, "proxy"),
            pod=self.pod_id,
            shared_volume=self.volume_name,
            relay_dir=str(relay.parent),
            relay_socket_name=relay.name,
        )

        def create_and_start() -> str:
            container: Container = client.containers.create(**kwargs)
            self.sidecar_id = container.id
            ops.start_container(client, container.id)
            return str(container.id)

        async def still_running() -> bool:
            if self.sidecar_id is None:
                return False
            state = await asyncio.to_thread(client.containers.get, self.sidecar_id)
            return str(state.status) == "running"

        sidecar = asyncio.ensure_future(asyncio.to_thread(create_and_start))
        self.sidecar_start = sidecar

        async def start_then_wait() -> None:
            # shield: a cancelled wait leaves the creation to finish; poststop awaits it
            # so the pod is never removed while a container is being put into it.
            await asyncio.shield(sidecar)
            await wait_for_proxy(
                mountpoint,
                PROXY_SOCKET_NAME,
                timeout_s=self.settings.ready_timeout_s,
                still_running=still_running,
            )

        # The sidecar is made and started, and the proxy comes up (a few hundred ms),
        # while the sandbox container is created and filled; ProxyReadyHook waits for
        # this just before the sandbox starts.
        self.ready = asyncio.create_task(start_then_wait(), name=f"proxy-ready-{ctx.spec.job_id}")
        ctx.pod_id = self.pod_id
        ctx.pod_started = sidecar
        ctx.extra_env.update(inference_env(job_model(ctx.spec, self.settings)))
        ctx.extra_volumes.update(sandbox_shared_volume(self.volume_name))

    async def wait_ready(self, ctx: JobContext) -> None:
        if self.ready is None:
            return
        try:
            await self.ready
        except ProxyNotReady:
            log.warning("job %s: sidecar log: %s", ctx.spec.job_id, self._log_tail(ctx))
            raise

    def _log_tail(self, ctx: JobContext) -> str:
        if self.sidecar_id is None:
            return ""
        try:
            response = ctx.client.api.get(
                f"/containers/{self.sidecar_id}/logs", params={"stdout": True, "stderr": True}
            )
            tail: bytes = response.content[-_LOG_TAIL_BYTES:]
            return tail.decode(errors="replace")
        except Exception as exc:  # only for the operator's log
            return f"(no log: {exc})"

    async def exited(self, ctx: JobContext) -> None:
        # The sandbox is done with the pod. Once its output stream has ended too, the
        # whole pod (sidecar, infra and sandbox) goes at once, while the other hooks
        # finish; otherwise only the sidecar, so the draining stream is left alone.
        if self.pod_id is not None and ctx.output_closed.is_set():
            self.early_removal = asyncio.create_task(
                asyncio.to_thread(ops.remove_pod, ctx.client, self.pod_id)
            )
            ctx.container_removal = self.early_removal
        elif self.sidecar_id is not None:
            self.early_removal = asyncio.create_task(
                asyncio.to_thread(ops.remove_container, ctx.client, self.sidecar_id)
            )

    async def poststop(self, ctx: JobContext) -> None:
        removal, self.early_removal = self.early_removal, None
        if removal is not None:
            await asyncio.wait({removal})
            if removal.exception() is not None:  # the pod removal below is the fallback
                log.warning("job %s: early removal: %s", ctx.spec.job_id, removal.exception())
        start, self.sidecar_start = self.sidecar_start, None
        if start is not None:
            await asyncio.wait({start})
            if not start.cancelled():
                start.exception()  # retrieved: a failure was reported through wait_ready
        ready, self.ready = self.ready, None
        if ready is not None and not ready.done():
            ready.cancel()
            await asyncio.wait({ready})
        if ready is not None and ready.done() and not ready.cancelled():
            ready.exception()  # retrieved: a failure was reported through wait_ready
        if self.pod_id is not None:
            await asyncio.to_thread(ops.remove_pod, ctx.client, self.pod_id)
            self.pod_id = None
        if self.volume_created:
            await asyncio.to_thread(ops.remove_volume, ctx.client, self.volume_name)
            self.volume_created = False


class ProxyReadyHook(Hook):
    """Last before the sandbox starts: waits until the pod's proxy answers."""

    name = "proxy-ready"

    def __init__(self, pod: InferencePodHook) -> None:
        self.pod = pod

    async def prestart(self, ctx: JobContext) -> None:
        await self.pod.wait_ready(ctx)
