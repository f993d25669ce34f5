"""The inference pod: shared volume, pod and proxy sidecar, ready before the sandbox.

prestart takes a warm pod from the node's pool when there is one (its proxy answered
just now), else makes the job's own (cold): the labelled volume for the proxy's socket,
the loopback-only pod and the sidecar, which starts while the sandbox container is
created and its inputs written; ProxyReadyHook, the last prestart, waits until the
proxy listens (its sockets accept; the first request waits in their backlog while the
proxy imports its server, beside the sandbox's start). Either way it tells the
container hook to put the sandbox into the pod with the inference env. poststart asks
the pool for a replacement (the job's own start is done by then). poststop (after the
sandbox container is gone) removes the pod, which takes the sidecar and the infra
container with it, then the volume.
"""

from __future__ import annotations

import asyncio
import logging
import time

from cynode.node.runtime import ops
from cynode.node.runtime.context import JobContext
from cynode.node.runtime.hooks import Hook
from cynode.node.runtime.inference_pod import InferencePod, require_relay
from cynode.node.runtime.labels import job_labels
from cynode.node.runtime.proxy_probe import ProxyNotReady
from cynode.node.runtime.proxy_sidecar import (
    inference_env,
    job_model,
    sandbox_shared_volume,
)
from cynode.node.runtime.settings import InferencePodSettings
from cynode.node.runtime.warm_pool import WarmPodPool

log = logging.getLogger(__name__)


class InferencePodHook(Hook):
    name = "inference-pod"

    def __init__(self, settings: InferencePodSettings, pool: WarmPodPool | None = None) -> None:
        self.settings = settings
        self.pool = pool
        self.pod: InferencePod | None = None
        self.ready: asyncio.Task[None] | None = None
        # A cold pod's proxy answering, after the sandbox was let start (for the log).
        self.answered: asyncio.Task[None] | None = None
        self.early_removal: asyncio.Task[None] | None = None

    async def prestart(self, ctx: JobContext) -> None:
        await require_relay(self.settings)
        pod = await self.pool.take(ctx.settings) if self.pool is not None else None
        if pod is not None:
            self.pod = pod
            log.info("job %s: runs in warm pod %s", ctx.spec.job_id, pod.pod_name)
            # Done: the pool started its sidecar (and the pod) and saw the proxy answer.
            ctx.pod_started = pod.sidecar_start
        else:
            await self._make_cold(ctx)
        assert self.pod is not None
        ctx.pod_id = self.pod.pod_id
        ctx.extra_env.update(
            inference_env(job_model(ctx.spec, self.settings), sandbox_tcp=self.settings.sandbox_tcp)
        )
        ctx.extra_volumes.update(sandbox_shared_volume(self.pod.volume_name))

    async def _make_cold(self, ctx: JobContext) -> None:
        spec, node_id = ctx.spec, ctx.settings.node_id
        # Same job id, attempt and random suffix as the sandbox container's name.
        stem = ctx.container_name.removeprefix("cynode-job-")
        pod = InferencePod(
            ctx.client,
            self.settings,
            stem=stem,
            labels=lambda role: job_labels(spec, node_id, role=role),
        )
        self.pod = pod
        await pod.create()
        # The sidecar is made and started, and the proxy binds its sockets, while the
        # sandbox container is created and filled; ProxyReadyHook waits for this just
        # before the sandbox starts.
        ctx.pod_started = pod.start_sidecar()
        self.ready = asyncio.create_task(pod.wait_listening(), name=f"proxy-ready-{spec.job_id}")

    async def wait_ready(self, ctx: JobContext) -> None:
        if self.ready is not None and self.pod is not None:
            await self.ready
            # Where a cold pod's time goes (measured: the sidecar's start, with the pod's
            # infra container, dominates; then the proxy's Python start up to its bind).
            log.info("job %s: cold pod ready: %s", ctx.spec.job_id, self.pod.timing())
            self.answered = asyncio.create_task(self._log_answered(ctx, self.pod))

    async def _log_answered(self, ctx: JobContext, pod: InferencePod) -> None:
        # The rest of the proxy's start (importing aiohttp), beside the sandbox's; the
        # job's first request waits in the proxy's backlog meanwhile. For the log only.
        listening = time.monotonic()
        try:
            await pod.wait_answering()
        except ProxyNotReady as exc:  # the job's requests fail: its own result says so
            log.warning("job %s: proxy never answered: %s", ctx.spec.job_id, exc)
            return
        log.info(
            "job %s: proxy answered %.0f ms after it listened",
            ctx.spec.job_id,
            (time.monotonic() - listening) * 1000,
        )

    async def poststart(self, ctx: JobContext) -> None:
        if self.pool is not None:
            self.pool.fill(ctx.settings)

    async def exited(self, ctx: JobContext) -> None:
        # The sandbox is done with the pod. Once its output stream has ended too, the
        # whole pod (sidecar, infra and sandbox) goes at once, while the other hooks
        # finish; otherwise only the sidecar, so the draining stream is left alone.
        pod = self.pod
        if pod is None:
            return
        if self.answered is not None:
            self.answered.cancel()  # only for the log; the sidecar goes now
        if pod.pod_id is not None and ctx.output_closed.is_set():
            self.early_removal = asyncio.create_task(
                asyncio.to_thread(ops.remove_pod, ctx.client, pod.pod_id)
            )
            ctx.container_removal = self.early_removal
        elif pod.sidecar_id is not None:
            self.early_removal = asyncio.create_task(
                asyncio.to_thread(ops.remove_container, ctx.client, pod.sidecar_id)
            )

    async def poststop(self, ctx: JobContext) -> None:
        removal, self.early_removal = self.early_removal, None
        if removal is not None:
            await asyncio.wait({removal})
            if removal.exception() is not None:  # the pod removal below is the fallback
                log.warning("job %s: early removal: %s", ctx.spec.job_id, removal.exception())
        for task in (self.ready, self.answered):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.wait({task})
            if task is not None and not task.cancelled():
                task.exception()  # retrieved: a failure was reported through wait_ready
        self.ready = self.answered = None
        pod = self.pod
        if pod is not None:
            await pod.remove()
        if self.pool is not None:
            # A job that never started its sandbox did not ask for a replacement yet.
            self.pool.fill(ctx.settings)


class ProxyReadyHook(Hook):
    """Last before the sandbox starts: waits until the pod's proxy answers."""

    name = "proxy-ready"

    def __init__(self, pod: InferencePodHook) -> None:
        self.pod = pod

    async def prestart(self, ctx: JobContext) -> None:
        await self.pod.wait_ready(ctx)
