"""Bind a listening socket inside another process's network namespace.

A cold inference job's sandbox runs alone with `--network none`: a network namespace of
its own with loopback only. The job's proxy listens on 127.0.0.1:11434 *inside* it
(job_proxy.py): once Podman has initialised the container (its netns exists, with `lo`
up, and its process waits for the start), a thread of the node enters that netns, binds
and listens, and comes back. A socket keeps the namespace it was made in, so the node
hands it to the proxy host, whose child for the job serves it like any other listener,
while nothing outside the sandbox can reach it.

Python 3.11 has no `os.setns`, so the call goes through libc. `setns(CLONE_NEWNET)`
changes the calling thread only; the work runs on a thread of its own that ends
afterwards, so a thread whose restore failed is never used again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import logging
import os
import socket
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def _in_netns(pid: int, bind: Callable[[], list[socket.socket]]) -> list[socket.socket]:
    """Runs `bind` in the network namespace of `pid`, on the calling thread (which must
    be one of its own: it stays in that namespace when the way back fails)."""
    own = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            return bind()
        finally:
            try:
                _setns(own)
            except OSError as exc:
                # The sockets are where they belong; only this thread is not, and it ends.
                log.warning("could not leave the netns of pid %d: %s", pid, exc)
    finally:
        os.close(own)


async def bind_in_netns(pid: int, bind: Callable[[], list[socket.socket]]) -> list[socket.socket]:
    """The sockets `bind` makes, made inside the network namespace of process `pid`.
    OSError when the namespace cannot be entered or the bind fails (nothing is left
    open then)."""
    done: concurrent.futures.Future[list[socket.socket]] = concurrent.futures.Future()

    def work() -> None:
        try:
            done.set_result(_in_netns(pid, bind))
        except BaseException as exc:  # handed to the waiter
            done.set_exception(exc)

    threading.Thread(target=work, name=f"netns-bind-{pid}", daemon=True).start()
    waiter = asyncio.wrap_future(done)
    try:
        return await asyncio.shield(waiter)
    except asyncio.CancelledError:
        # The bind goes on without its caller: close what it makes.
        waiter.add_done_callback(_close_result)
        raise


def _close_result(future: asyncio.Future[list[socket.socket]]) -> None:
    if not future.cancelled() and future.exception() is None:
        for sock in future.result():
            sock.close()
