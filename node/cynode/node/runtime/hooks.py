"""The hook interface: one concern of a job's life per hook (Nomad's task-runner shape).

The runner calls, for every hook in order: prestart (before the container starts),
poststart (right after), exited (after the container has stopped, before the result is
built), and, in reverse order and always, poststop (release whatever the hook made).
poststop must cope with a prestart that never ran or failed half way.
"""

from __future__ import annotations

from cynode.node.runtime.context import JobContext


class Hook:
    name = "hook"

    async def prestart(self, ctx: JobContext) -> None:
        return None

    async def poststart(self, ctx: JobContext) -> None:
        return None

    async def exited(self, ctx: JobContext) -> None:
        return None

    async def poststop(self, ctx: JobContext) -> None:
        return None
