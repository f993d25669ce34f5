"""A whole NodeDaemon running in the test's event loop, for the tests that drive one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from cynode.node.config import NodeConfig
from cynode.node.daemon import ContainerHost, NodeDaemon


def is_ready(daemon: NodeDaemon) -> bool:
    return daemon.readiness.ready


@contextlib.asynccontextmanager
async def running_daemon(
    config: NodeConfig,
    *,
    host: ContainerHost | None = None,
    until: Callable[[NodeDaemon], bool] = is_ready,
) -> AsyncIterator[NodeDaemon]:
    """The daemon, once `until` holds (by default: it is ready) or it has ended (the test
    asserts which it wanted); stopped and awaited on the way out."""
    daemon = NodeDaemon(config, host=host)
    task = asyncio.create_task(daemon.run())
    try:
        for _ in range(3000):
            if until(daemon) or task.done():
                break
            await asyncio.sleep(0.02)
        yield daemon
    finally:
        daemon.stop()
        await asyncio.wait_for(task, 60)
