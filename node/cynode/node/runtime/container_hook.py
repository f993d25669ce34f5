"""The sandbox container: created with the sandbox rules, removed when the job ends."""

from __future__ import annotations

import asyncio
import time

from podman.domain.containers import Container

from cynode.node.runtime import ops
from cynode.node.runtime.context import JobContext
from cynode.node.runtime.hooks import Hook
from cynode.node.runtime.sandbox import build_create_kwargs


class ContainerHook(Hook):
    name = "container"

    async def prestart(self, ctx: JobContext) -> None:
        assert ctx.plan is not None
        kwargs = build_create_kwargs(
            ctx.spec,
            ctx.settings,
            command=ctx.plan.command,
            name=ctx.container_name,
            volume_name=ctx.volume_name,
            pod=ctx.pod_id,
            extra_env=ctx.extra_env,
            extra_volumes=ctx.extra_volumes,
        )

        def create() -> Container:
            return ctx.client.containers.create(**kwargs)

        container = await asyncio.to_thread(create)
        ctx.container_id = container.id
        ctx.marks["sandbox created"] = time.monotonic()
        if ctx.pod_started is not None:
            # Made at the same time as the sidecar; init would fail ("cannot get namespace
            # path") if it came before the sidecar's start had started the pod's infra.
            # shield: the pod hook owns that start and awaits it in its poststop.
            await asyncio.shield(ctx.pod_started)
        # Initialising mounts the volume (and copies /workspace into it), so the input
        # files written next land on top of the image's /workspace, not under it.
        await asyncio.to_thread(container.init)
        ctx.marks["sandbox initialised"] = time.monotonic()

    async def poststop(self, ctx: JobContext) -> None:
        if ctx.container_removal is not None:
            # Its outcome is the remover's to report; the removal below is the fallback.
            await asyncio.wait({ctx.container_removal})
        if ctx.container_id is not None:
            await asyncio.to_thread(ops.remove_container, ctx.client, ctx.container_id)
