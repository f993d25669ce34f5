"""A job that needs inference: in a warm pod, or alone with the proxy host's child (cold).

prestart takes a warm pod from the node's pool when there is one (its proxy answered
just now) and tells the container hook to put the sandbox into it with the inference
env. When there is none, the job does not make a pod (SPEC §4.6): its sandbox runs
alone with `--network none`, and its proxy runs in a child of the node's proxy host
(job_proxy.py). prestart reaches the proxy host (the job fails here, before its sandbox
is made, when the host is down) and binds the proxy's Unix socket in a per-job
directory the sandbox mounts; ProxyReadyHook, the last prestart (the sandbox is created
and initialised by then, so its network namespace exists and its process waits for the
start), binds 127.0.0.1:11434 inside that namespace and hands both listeners to the
proxy host, whose child for the job serves them before the sandbox starts, so the job's
first request finds the proxy answering. poststart asks the pool for a replacement and
logs a cold job's steps. A warm pod goes when the sandbox has exited (exited) or at
poststop; a cold job's proxy child, listeners and directory go at poststop.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

from cynode.node.runtime import ops
from cynode.node.runtime.context import JobContext
from cynode.node.runtime.hooks import Hook
from cynode.node.runtime.inference_pod import InferencePod, require_relay
from cynode.node.runtime.job_proxy import JobProxy
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
        # A cold job's proxy, a child of the proxy host (job_proxy.py).
        self.proxy: JobProxy | None = None
        self.begin = 0.0
        self.early_removal: asyncio.Task[None] | None = None

    async def prestart(self, ctx: JobContext) -> None:
        await require_relay(self.settings)
        pod = await self.pool.take(ctx.settings) if self.pool is not None else None
        if pod is not None:
            self.pod = pod
            log.info("job %s: runs in warm pod %s", ctx.spec.job_id, pod.pod_name)
            # Done: the pool started its sidecar (and the pod) and saw the proxy answer.
            ctx.pod_started = pod.sidecar_start
            ctx.pod_id = pod.pod_id
            ctx.extra_volumes.update(sandbox_shared_volume(pod.volume_name))
        else:
            self.begin = time.monotonic()
            self.proxy = JobProxy(self.settings)
            await self.proxy.open()
            ctx.extra_volumes.update(self.proxy.sandbox_volume())
        ctx.extra_env.update(
            inference_env(job_model(ctx.spec, self.settings), sandbox_tcp=self.settings.sandbox_tcp)
        )

    async def wait_ready(self, ctx: JobContext) -> None:
        """A cold job's proxy listens inside the initialised sandbox and serves."""
        if self.proxy is None:
            return
        assert ctx.container_id is not None
        pid = 0
        if self.settings.sandbox_tcp:
            pid = await asyncio.to_thread(ops.container_pid, ctx.client, ctx.container_id)
        await self.proxy.serve(pid)

    def timing(self, ctx: JobContext) -> str:
        """Where a cold job's start went, step by step: "socket 1 ms, sandbox created
        62 ms, ..." (each from the end of the step before)."""
        marks = {"begin": self.begin, **ctx.marks}
        if self.proxy is not None:
            marks.update(self.proxy.marks)
        steps = sorted(marks.items(), key=lambda item: item[1])
        return ", ".join(
            f"{name} {(at - before) * 1000:.0f} ms"
            for (_, before), (name, at) in itertools.pairwise(steps)
        )

    async def poststart(self, ctx: JobContext) -> None:
        if self.proxy is not None:
            ctx.marks["sandbox started"] = time.monotonic()
            log.info("job %s: cold sandbox started: %s", ctx.spec.job_id, self.timing(ctx))
        if self.pool is not None:
            self.pool.fill(ctx.settings)

    async def exited(self, ctx: JobContext) -> None:
        # The sandbox is done with its warm pod. Once its output stream has ended too,
        # the whole pod (sidecar, infra and sandbox) goes at once, while the other hooks
        # finish; otherwise only the sidecar, so the draining stream is left alone.
        pod = self.pod
        if pod is None:
            return
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
        proxy, self.proxy = self.proxy, None
        if proxy is not None:
            await proxy.close()
        pod = self.pod
        if pod is not None:
            await pod.remove()
        if self.pool is not None:
            # A job that never started its sandbox did not ask for a replacement yet.
            self.pool.fill(ctx.settings)


class ProxyReadyHook(Hook):
    """Last before the sandbox starts: a cold job's proxy listens in its sandbox."""

    name = "proxy-ready"

    def __init__(self, pod: InferencePodHook) -> None:
        self.pod = pod

    async def prestart(self, ctx: JobContext) -> None:
        await self.pod.wait_ready(ctx)
