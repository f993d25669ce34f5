"""The job's /workspace: a labelled named volume per job, removed when the job ends.

A named volume (not a host directory) keeps the node free of per-job host paths and
works with any Podman socket; Podman copies the image's /workspace (owned by the
sandbox user) into it when the container is initialised.
"""

from __future__ import annotations

import asyncio

from cynode.node.runtime import ops
from cynode.node.runtime.context import JobContext
from cynode.node.runtime.hooks import Hook
from cynode.node.runtime.labels import job_labels


class WorkspaceHook(Hook):
    name = "workspace"

    async def prestart(self, ctx: JobContext) -> None:
        labels = job_labels(ctx.spec, ctx.settings.node_id, role="workspace")
        await asyncio.to_thread(ctx.client.volumes.create, ctx.volume_name, labels=labels)
        ctx.volume_created = True

    async def poststop(self, ctx: JobContext) -> None:
        if ctx.volume_created:
            await asyncio.to_thread(ops.remove_volume, ctx.client, ctx.volume_name)
            ctx.volume_created = False
