"""Writes the script and attachments into /workspace before the container starts."""

from __future__ import annotations

import asyncio

from cynode.node.runtime.context import JobContext
from cynode.node.runtime.hooks import Hook
from cynode.node.runtime.inputs import workspace_tar
from cynode.node.runtime.sandbox import WORKSPACE


class InputFilesHook(Hook):
    name = "input-files"

    async def prestart(self, ctx: JobContext) -> None:
        assert ctx.plan is not None and ctx.container_id is not None
        if not ctx.plan.files:
            return
        data = workspace_tar(ctx.plan.files)
        container = await asyncio.to_thread(ctx.client.containers.get, ctx.container_id)
        if not await asyncio.to_thread(container.put_archive, WORKSPACE, data):
            raise RuntimeError("could not write the workspace files")
