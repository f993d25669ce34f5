"""The job's /workspace: a labelled named volume per job, removed when the job ends.

A named volume (not a host directory) keeps the node free of per-job host paths and
works with any Podman socket; Podman copies the image's /workspace (owned by the
sandbox user) into it when the container is initialised. With `workspace_mb` set, the
volume is an ext4 image of that size (workspace_image.py), so a job cannot fill the
node's disk: it gets ENOSPC past its bound (SPEC §4.4).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from cynode.node.runtime import ops
from cynode.node.runtime.context import JobContext
from cynode.node.runtime.hooks import Hook
from cynode.node.runtime.labels import job_labels
from cynode.node.runtime.workspace_image import (
    RELEASE_WAIT_S,
    image_path,
    make_image,
    volume_options,
    wait_unmounted,
)


class WorkspaceHook(Hook):
    name = "workspace"

    def _image(self, ctx: JobContext) -> Path | None:
        settings = ctx.settings
        return image_path(settings.workspace_mb, settings.workspace_dir, ctx.volume_name)

    async def prestart(self, ctx: JobContext) -> None:
        labels = job_labels(ctx.spec, ctx.settings.node_id, role="workspace")
        image = self._image(ctx)
        if image is None:
            await asyncio.to_thread(ctx.client.volumes.create, ctx.volume_name, labels=labels)
        else:
            await asyncio.to_thread(make_image, image, ctx.settings.workspace_mb)
            await asyncio.to_thread(
                ctx.client.volumes.create,
                ctx.volume_name,
                labels=labels,
                driver="local",
                driver_opts=volume_options(image),
            )
        ctx.volume_created = True

    async def poststop(self, ctx: JobContext) -> None:
        if ctx.volume_created:
            await asyncio.to_thread(ops.remove_volume, ctx.client, ctx.volume_name)
            ctx.volume_created = False
        image = self._image(ctx)
        if image is not None:
            # The kernel lets the loop device go a moment after its last mount; the
            # image goes once it has (so nothing of the job outlives the job).
            await asyncio.to_thread(wait_unmounted, image, RELEASE_WAIT_S)
            await asyncio.to_thread(image.unlink, True)
