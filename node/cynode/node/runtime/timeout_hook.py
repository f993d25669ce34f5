"""The wall-clock limit: stops the container when the effective timeout passes."""

from __future__ import annotations

import asyncio

from cynode.node.runtime.context import JobContext, StopKind
from cynode.node.runtime.hooks import Hook


class TimeoutHook(Hook):
    name = "timeout"

    def __init__(self) -> None:
        self._timer: asyncio.Task[None] | None = None

    async def poststart(self, ctx: JobContext) -> None:
        self._timer = asyncio.create_task(self._expire(ctx), name=f"timeout-{ctx.spec.job_id}")

    async def _expire(self, ctx: JobContext) -> None:
        await asyncio.sleep(ctx.timeout_s)
        await ctx.request_stop(StopKind.TIMEOUT, "timeout")

    async def exited(self, ctx: JobContext) -> None:
        await self._disarm()

    async def poststop(self, ctx: JobContext) -> None:
        await self._disarm()

    async def _disarm(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and not timer.done():
            timer.cancel()
            # wait() rather than `await timer`: the timer's CancelledError is not ours.
            await asyncio.wait({timer})
