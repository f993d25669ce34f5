"""Writes the script and attachments into /workspace before the container starts."""

from __future__ import annotations

import asyncio

from cynode.node.runtime import ops
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
        await asyncio.to_thread(ops.put_archive, ctx.client, ctx.container_id, WORKSPACE, data)
