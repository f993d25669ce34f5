"""The guarded proxy of one cold inference job, served by the node itself (SPEC §4.6).

A job that finds no warm pod runs its sandbox alone (`--network none`, every §4.4
rule, a user namespace of its own): no pod, no infra container, no sidecar. The node
gives it the proxy's two doors from its own process:

- `proxy.sock`, bound by the node in a per-job host directory (0711, socket 0666) that
  the sandbox mounts read-only at /run/cynode-inference;
- 127.0.0.1:11434 (unless `sandbox_tcp` is off), bound inside the sandbox's own network
  namespace once Podman has initialised the container and before it starts (netns.py):
  the sandbox sees it on its loopback, nothing outside the sandbox can reach it.

Both are served by cynode.proxy in the node's event loop (`start_proxy` with the bound
sockets), with the sidecar's policy (paths and methods, body cap, response-head timeout,
no credentials either way) plus a bound on the requests in flight, and forward straight
to the node's upstream (`InferencePodSettings.upstream`; the relay's socket when none is
set): one guard, no hop through a sidecar. Everything goes when the job ends; the node's
start-up cleanup removes directories a killed node left (`remove_job_dirs`).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import tempfile
import time
from pathlib import Path

from cynode.node.runtime.netns import bind_in_netns
from cynode.node.runtime.proxy_sidecar import PROXY_PORT, PROXY_SOCKET_NAME, SHARED_DIR
from cynode.node.runtime.settings import InferencePodSettings
from cynode.proxy import (
    ListenAddress,
    ProxyConfig,
    RunningProxy,
    bind_listener,
    close_listeners,
    parse_listen,
    parse_upstream,
    start_proxy,
)

log = logging.getLogger(__name__)

JOB_DIR_MODE = 0o711
# A job's requests in flight at once; more wait their turn (a sidecar had its pids and
# memory limits for this; the node's proxy has its event loop, shared by every job).
JOB_MAX_IN_FLIGHT = 16
# sun_path holds 108 bytes with its NUL; <root>/<job dir>/proxy.sock must fit.
_MAX_ROOT = 107 - len("/jXXXXXXXX/") - len(PROXY_SOCKET_NAME)


def job_proxy_root(state_dir: Path) -> Path:
    """Where the node makes its jobs' socket directories: <state_dir>/inference-jobs, or
    a short temporary directory when that path is too long for a socket under it."""
    preferred = state_dir / "inference-jobs"
    if len(str(preferred)) <= _MAX_ROOT:
        return preferred
    return Path(tempfile.mkdtemp(prefix="cynode-jobs-"))


def socket_root(settings: InferencePodSettings) -> Path:
    """Where these settings' job socket directories go: `job_socket_dir`, or beside the
    relay's directory when they name none (tests, benches)."""
    if settings.job_socket_dir:
        return Path(settings.job_socket_dir)
    return Path(f"{Path(settings.relay_socket).parent}-jobs")


def remove_job_dirs(root: Path) -> int:
    """At node start: the socket directories of jobs a killed node left behind."""
    gone = 0
    if root.is_dir():
        for entry in root.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
                gone += 1
    return gone


class JobProxy:
    """`open()` makes the directory and binds the socket, `serve(pid)` binds the TCP
    listener in the sandbox's netns and starts serving, `close()` undoes it all (also
    after a failure half way)."""

    def __init__(self, settings: InferencePodSettings) -> None:
        self.settings = settings
        self.directory: Path | None = None
        self._sockets: dict[str, list[socket.socket]] = {}
        self._proxy: RunningProxy | None = None
        self.marks: dict[str, float] = {}

    @property
    def socket_path(self) -> Path:
        assert self.directory is not None, "open() first"
        return self.directory / PROXY_SOCKET_NAME

    def config(self) -> ProxyConfig:
        tcp = (ListenAddress("127.0.0.1", PROXY_PORT),) if self.settings.sandbox_tcp else ()
        upstream = self.settings.upstream or f"unix:{self.settings.relay_socket}"
        return ProxyConfig(
            upstream=parse_upstream(upstream),
            listen=(*tcp, parse_listen(f"unix:{self.socket_path}")),
            max_body_bytes=self.settings.max_body_bytes,
            timeout=self.settings.proxy_timeout_s,
            unix_socket_mode=0o666,
            max_in_flight=JOB_MAX_IN_FLIGHT,
        )

    async def open(self) -> None:
        """The job's directory (0711) with the proxy's Unix socket (0666) in it."""
        await asyncio.to_thread(self._open)
        self.marks["socket"] = time.monotonic()

    def _open(self) -> None:
        root = socket_root(self.settings)
        root.mkdir(parents=True, exist_ok=True)
        self.directory = Path(tempfile.mkdtemp(prefix="j", dir=root))
        self.directory.chmod(JOB_DIR_MODE)
        unix = parse_listen(f"unix:{self.socket_path}")
        self._sockets["unix"] = bind_listener(unix, 0o666)

    def sandbox_volume(self) -> dict[str, dict[str, object]]:
        """The directory as the sandbox mounts it: read-only, it only connects."""
        assert self.directory is not None, "open() first"
        return {
            str(self.directory): {
                "bind": SHARED_DIR,
                "extended_mode": ["ro", "nodev", "nosuid", "noexec"],
            }
        }

    async def serve(self, pid: int) -> None:
        """Binds 127.0.0.1:11434 in the netns of `pid` (the initialised sandbox's
        process; not with `sandbox_tcp` off), then serves both listeners."""
        config = self.config()
        if self.settings.sandbox_tcp:
            tcp = config.listen[0]
            self._sockets["tcp"] = await bind_in_netns(pid, lambda: bind_listener(tcp, 0))
            self.marks["netns bind"] = time.monotonic()
        groups = [self._sockets["tcp"]] if self.settings.sandbox_tcp else []
        groups.append(self._sockets["unix"])
        self._proxy = await start_proxy(config, groups)
        self._sockets.clear()  # the proxy owns them now
        self.marks["proxy serving"] = time.monotonic()

    async def close(self) -> None:
        proxy, self._proxy = self._proxy, None
        try:
            if proxy is not None:
                await proxy.close()
        finally:
            close_listeners(list(self._sockets.values()))
            self._sockets.clear()
            directory, self.directory = self.directory, None
            if directory is not None:
                await asyncio.to_thread(shutil.rmtree, directory, True)
