"""Waits until a warm pod's sidecar proxy answers, from the host, through the shared
volume.

The proxy's UDS lives in a named volume whose host directory (`Mountpoint`) the node can
reach, so no `podman exec` and no network is needed: connect to the socket there and ask
GET /healthz. Volume paths can be long, past the 108 bytes a socket address holds, so
the connect goes through /proc/self/fd/<directory fd>/proxy.sock, which is always short.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable

_POLL_S = 0.02
_ANSWER_TIMEOUT_S = 2.0


class ProxyNotReady(RuntimeError):
    pass


async def proxy_answers(directory: str, socket_name: str) -> bool:
    """One probe: True when GET /healthz on the socket in `directory` answers 200."""
    return await _probe(directory, socket_name)


async def _probe(directory: str, socket_name: str) -> bool:
    try:
        dir_fd = os.open(directory, os.O_PATH | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        path = f"/proc/self/fd/{dir_fd}/{socket_name}"
        async with asyncio.timeout(_ANSWER_TIMEOUT_S):
            reader, writer = await asyncio.open_unix_connection(path)
            try:
                writer.write(b"GET /healthz HTTP/1.0\r\nHost: proxy\r\n\r\n")
                await writer.drain()
                status_line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        return status_line.split(b" ")[1:2] == [b"200"]
    except (OSError, TimeoutError, IndexError):
        return False
    finally:
        os.close(dir_fd)


async def wait_for_proxy(
    directory: str,
    socket_name: str,
    *,
    timeout_s: float,
    still_running: Callable[[], Awaitable[bool]],
) -> None:
    """Poll until the proxy answers; ProxyNotReady when the sidecar died or time ran out.

    `still_running` is asked every ~0.5 s so a sidecar that exited fails the job at once
    rather than after the whole timeout.
    """
    deadline = time.monotonic() + timeout_s
    next_check = time.monotonic() + 0.5
    while True:
        if await proxy_answers(directory, socket_name):
            return
        now = time.monotonic()
        if now >= deadline:
            raise ProxyNotReady(f"inference proxy not ready within {timeout_s:g}s")
        if now >= next_check:
            next_check = now + 0.5
            if not await still_running():
                raise ProxyNotReady("inference proxy exited before it was ready")
        await asyncio.sleep(_POLL_S)
