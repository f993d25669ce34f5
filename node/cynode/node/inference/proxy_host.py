"""The node's proxy host: one jailed container that serves every cold job's proxy.

A cold inference job's sandbox runs alone (SPEC §4.6); its proxy runs in a child the
proxy host forks for it (cynode.proxy's `host` command, job_proxy.py hands it the job's
sockets). The container has the sidecar's jail (proxy_sidecar.py: non-root, no
capabilities, read-only root, `--network none`, the relay's directory its one way out)
sized for the node's concurrent jobs, and a control directory of its own where it makes
its control socket.

`start()` makes and starts it and waits until its control socket answers; the node then
keeps one connection to it that carries no job, and reads EOF on it when the host dies:
it is made again in the background (with a growing pause between tries) while cold jobs
fail with a clear error (job_proxy.ProxyHostDown). It carries the node's label, so the
node's start-up cleanup removes one a killed node left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from podman import PodmanClient

from ..backoff import Backoff
from ..runtime import ops
from ..runtime.job_proxy import (
    PROXY_HOST_SOCKET_NAME,
    host_pid_file,
    peer_pid,
    proxy_host_socket,
)
from ..runtime.proxy_sidecar import proxy_host_create_kwargs
from ..runtime.settings import InferencePodSettings
from ..state import socket_dir

log = logging.getLogger(__name__)

CONTROL_DIR_MODE = 0o700
# The first start of the container takes a second or so on a loaded node.
READY_TIMEOUT_S = 30.0


def control_socket(state_dir: Path) -> Path:
    """<state_dir>/proxy-host/host.sock, or in a short temporary directory when that
    path is too long for a socket."""
    preferred = state_dir / "proxy-host"
    name = PROXY_HOST_SOCKET_NAME
    return socket_dir(preferred, name, "cynode-proxyhost-") / name


class ProxyHostNotReady(RuntimeError):
    pass


class ProxyHost:
    """Runs the proxy host for `settings` (its image, userns, the relay's socket, the
    control socket's place: `job_proxy.proxy_host_socket`)."""

    def __init__(
        self,
        client: Callable[[], PodmanClient],
        settings: InferencePodSettings,
        *,
        labels: Mapping[str, str],
        jobs: int,
    ) -> None:
        self._client = client
        self.settings = settings
        self.labels = dict(labels)
        self.jobs = max(1, jobs)
        self.socket_path = proxy_host_socket(settings)
        self.name = f"cynode-proxyhost-{secrets.token_hex(4)}"
        self.container_id: str | None = None
        self.restarts = 0
        self._watch: socket.socket | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._creating: asyncio.Future[str] | None = None
        self._closing = False

    @property
    def running(self) -> bool:
        return self._watch is not None

    async def start(self) -> None:
        """Makes and starts the container and waits until it answers (ProxyHostNotReady
        or the Podman error when it does not); then watches it."""
        self._closing = False
        await self._start_once()
        self._watcher = asyncio.create_task(self._watch_and_restart())

    async def ensure(self) -> str:
        """`start()` that does not fail: when the first start does, the tries go on in
        the background (cold jobs fail meanwhile) and the reason is returned."""
        try:
            await self.start()
            return ""
        except Exception as exc:
            log.error("the proxy host did not start: %s; trying again", exc)
            self._watcher = asyncio.create_task(self._watch_and_restart(restart_first=True))
            return str(exc) or type(exc).__name__

    async def _start_once(self) -> None:
        await self._remove()
        directory = self.socket_path.parent
        await asyncio.to_thread(self._fresh_dir, directory)
        kwargs = proxy_host_create_kwargs(
            self.settings,
            labels=self.labels,
            name=self.name,
            relay_dir=str(Path(self.settings.relay_socket).parent),
            control_dir=str(directory),
            jobs=self.jobs,
            control_socket_name=self.socket_path.name,
        )

        def create_and_start() -> str:
            client = self._client()
            container = client.containers.create(**kwargs)
            self.container_id = str(container.id)
            ops.start_container(client, self.container_id)
            return self.container_id

        # Left to finish when whoever awaits it gives up (close() waits for it), so a
        # container made meanwhile is still removed.
        self._creating = asyncio.ensure_future(asyncio.to_thread(create_and_start))
        await asyncio.shield(self._creating)
        self._watch = await self._connect()
        # Made by the host before any child exists: its listener is the host's own.
        pid = peer_pid(self._watch)
        await asyncio.to_thread(host_pid_file(self.socket_path).write_text, str(pid))
        log.info("proxy host %s answers on %s", self.name, self.socket_path)

    def _fresh_dir(self, directory: Path) -> None:
        # A socket a dead host left behind must not look like a live one.
        host_pid_file(self.socket_path).unlink(missing_ok=True)
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        directory.chmod(CONTROL_DIR_MODE)

    async def _connect(self) -> socket.socket:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            conn.setblocking(False)
            try:
                await asyncio.get_running_loop().sock_connect(conn, str(self.socket_path))
                return conn
            except OSError as exc:
                conn.close()
                if time.monotonic() > deadline or not await self._container_running():
                    raise ProxyHostNotReady(
                        f"proxy host {self.name} does not answer on {self.socket_path}: {exc}"
                        f"; its log: {await self._log_tail()}"
                    ) from None
            await asyncio.sleep(0.02)

    async def _container_running(self) -> bool:
        if self.container_id is None:
            return False
        try:
            state = await asyncio.to_thread(ops.container_state, self._client(), self.container_id)
        except Exception:
            return False
        return bool(state.get("Running"))

    async def _log_tail(self) -> str:
        if self.container_id is None:
            return ""
        return await asyncio.to_thread(ops.log_tail, self._client(), self.container_id)

    async def _watch_and_restart(self, restart_first: bool = False) -> None:
        loop = asyncio.get_running_loop()
        pauses = Backoff(0.5, 30.0)
        while not self._closing:
            if not restart_first:
                watch = self._watch
                assert watch is not None
                with contextlib.suppress(OSError):
                    await loop.sock_recv(watch, 16)  # EOF: the host is gone
                if self._closing:
                    return
                watch.close()
                self._watch = None
                log.warning("the proxy host %s went away; starting it again", self.name)
            restart_first = False
            try:
                self.restarts += 1
                await self._start_once()
                pauses.reset()
            except Exception as exc:
                log.error("the proxy host did not start again: %s", exc)
                await asyncio.sleep(pauses.next_delay())
                restart_first = True

    async def _remove(self) -> None:
        container_id, self.container_id = self.container_id, None
        if container_id is not None:
            await asyncio.to_thread(ops.remove_container, self._client(), container_id)

    async def close(self) -> None:
        self._closing = True
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.close()
        creating, self._creating = self._creating, None
        if creating is not None:
            await asyncio.wait({creating})
            if not creating.cancelled():
                creating.exception()  # retrieved: its failure was reported by start()
        try:
            await self._remove()
        finally:
            await asyncio.to_thread(host_pid_file(self.socket_path).unlink, True)
            await asyncio.to_thread(shutil.rmtree, self.socket_path.parent, True)
