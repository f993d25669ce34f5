"""A whole NodeDaemon running in the test's event loop, for the tests that drive one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from cynode.node.config import NodeConfig
from cynode.node.daemon import NodeDaemon


@contextlib.asynccontextmanager
async def running_daemon(config: NodeConfig) -> AsyncIterator[NodeDaemon]:
    """The daemon, once it is ready or has ended (the test asserts which it wanted);
    stopped and awaited on the way out."""
    daemon = NodeDaemon(config)
    task = asyncio.create_task(daemon.run())
    try:
        for _ in range(3000):
            if daemon.readiness.ready or task.done():
                break
            await asyncio.sleep(0.02)
        yield daemon
    finally:
        daemon.stop()
        await asyncio.wait_for(task, 60)
