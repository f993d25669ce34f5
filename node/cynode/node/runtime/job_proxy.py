"""The guarded proxy of one cold inference job, served by the node's proxy host (SPEC §4.6).

A job that finds no warm pod runs its sandbox alone (`--network none`, every §4.4
rule, a user namespace of its own): no pod, no infra container, no sidecar of its own.
The node makes the proxy's two doors and hands them to the proxy host, the one jailed
proxy container of the node (inference/proxy_host.py; cynode.proxy's `host` command):

- `proxy.sock`, bound by the node in a per-job host directory (0711, socket 0666) that
  the sandbox mounts read-only at /run/cynode-inference;
- 127.0.0.1:11434 (unless `sandbox_tcp` is off), bound inside the sandbox's own network
  namespace once Podman has initialised the container and before it starts (netns.py):
  the sandbox sees it on its loopback, nothing outside the sandbox can reach it.

`open()` also connects to the proxy host's control socket, so a job fails before its
sandbox is even created when the host is down (the node restarts it meanwhile).
`serve(pid)` sends both listening sockets (SCM_RIGHTS) with the job's ProxyConfig (the
sidecar's policy; upstream: the relay's socket as the proxy host mounts it) and waits
for the job's child to answer "serving" with a pidfd of itself. The node never parses a
byte of the job's traffic: the child, non-root in the jailed container, does. At the
job's end `close()` stops the child (SIGTERM through its pidfd, SIGKILL after a grace)
and removes the directory; the node's start-up cleanup removes directories a killed node
left (`remove_job_dirs`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import shutil
import signal
import socket
import struct
import tempfile
import time
from pathlib import Path

from cynode.node.runtime.netns import bind_in_netns
from cynode.node.runtime.proxy_probe import ProxyNotReady
from cynode.node.runtime.proxy_sidecar import (
    PROXY_PORT,
    PROXY_SOCKET_NAME,
    SHARED_DIR,
    UPSTREAM_DIR,
)
from cynode.node.runtime.settings import InferencePodSettings
from cynode.node.state import socket_dir
from cynode.proxy import (
    ListenAddress,
    ProxyConfig,
    bind_listener,
    close_listeners,
    parse_listen,
    parse_upstream,
)
from cynode.proxy._host import HandoffError, job_serving, send_job

log = logging.getLogger(__name__)

JOB_DIR_MODE = 0o711
# A job's requests in flight at once; more wait their turn (its connections are capped
# by the child's open-files limit, `job_max_connections`).
JOB_MAX_IN_FLIGHT = 16
# The child answers once its server runs: a fork and an event loop, milliseconds.
HANDOFF_TIMEOUT_S = 10.0
# After SIGTERM the child closes its listeners and cuts what is left; then SIGKILL.
STOP_GRACE_S = 3.0
PROXY_HOST_SOCKET_NAME = "host.sock"


class ProxyHostDown(ProxyNotReady):
    """The proxy host does not take the job; the job fails before its sandbox starts."""


def peer_pid(conn: socket.socket) -> int:
    """The pid (in the node's namespace) of the process that listens at the other end."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid: int = struct.unpack("3i", creds)[0]
    return pid


def host_pid_file(control_socket: Path) -> Path:
    """Where the node notes the proxy host's pid: beside its control directory, outside
    what the container mounts, so nothing in it can change the note."""
    return control_socket.parent.with_name(control_socket.parent.name + ".pid")


def proxy_host_socket(settings: InferencePodSettings) -> Path:
    """The proxy host's control socket: `proxy_host_socket`, or beside the relay's
    directory when the settings name none (tests, benches)."""
    if settings.proxy_host_socket:
        return Path(settings.proxy_host_socket)
    return Path(f"{Path(settings.relay_socket).parent}-host") / PROXY_HOST_SOCKET_NAME


def job_proxy_root(state_dir: Path) -> Path:
    """Where the node makes its jobs' socket directories: <state_dir>/inference-jobs, or
    a short temporary directory when that path is too long for a socket under it."""
    longest = f"jXXXXXXXX/{PROXY_SOCKET_NAME}"  # <root>/<job dir>/proxy.sock
    return socket_dir(state_dir / "inference-jobs", longest, "cynode-jobs-")


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
    """`open()` makes the directory, binds the socket and reaches the proxy host,
    `serve(pid)` binds the TCP listener in the sandbox's netns and hands both to the
    host, `close()` undoes it all (also after a failure half way)."""

    def __init__(self, settings: InferencePodSettings) -> None:
        self.settings = settings
        self.directory: Path | None = None
        self._sockets: dict[str, list[socket.socket]] = {}
        self._control: socket.socket | None = None
        self._child: int | None = None  # the child's pidfd
        self.marks: dict[str, float] = {}

    @property
    def socket_path(self) -> Path:
        assert self.directory is not None, "open() first"
        return self.directory / PROXY_SOCKET_NAME

    @property
    def child_pid(self) -> int | None:
        """The job's child as the node sees it (its pid in the node's namespace)."""
        if self._child is None:
            return None
        for line in Path(f"/proc/self/fdinfo/{self._child}").read_text().splitlines():
            if line.startswith("Pid:"):
                return int(line.split()[1])
        return None

    def config(self) -> ProxyConfig:
        tcp = (ListenAddress("127.0.0.1", PROXY_PORT),) if self.settings.sandbox_tcp else ()
        relay = Path(self.settings.relay_socket)
        return ProxyConfig(
            # As the proxy host mounts the relay's directory (the sidecar's way out).
            upstream=parse_upstream(f"unix:{UPSTREAM_DIR}/{relay.name}"),
            listen=(*tcp, parse_listen(f"unix:{self.socket_path}")),
            max_body_bytes=self.settings.max_body_bytes,
            timeout=self.settings.proxy_timeout_s,
            max_in_flight=JOB_MAX_IN_FLIGHT,
        )

    async def open(self) -> None:
        """The job's directory (0711) with the proxy's Unix socket (0666) in it, and a
        connection to the proxy host (ProxyHostDown when it does not answer)."""
        await asyncio.to_thread(self._open)
        self.marks["socket"] = time.monotonic()

    def _open(self) -> None:
        control = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        path = proxy_host_socket(self.settings)
        try:
            control.connect(str(path))
            # The control directory is the container's: only the host's own listener is
            # trusted with a job's sockets, not one a job's child could put there.
            expected = int(host_pid_file(path).read_text())
        except (OSError, ValueError) as exc:
            control.close()
            raise ProxyHostDown(
                f"the node's inference proxy host is not running ({exc}); "
                "the node restarts it, the job can be retried"
            ) from None
        if peer_pid(control) != expected:
            control.close()
            raise ProxyHostDown(
                f"{path} is not served by the node's inference proxy host (pid {expected})"
            )
        self._control = control
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
        process; not with `sandbox_tcp` off), then hands both listeners to the proxy
        host and waits for the job's child to serve them (ProxyHostDown otherwise)."""
        config = self.config()
        if self.settings.sandbox_tcp:
            tcp = config.listen[0]
            self._sockets["tcp"] = await bind_in_netns(pid, lambda: bind_listener(tcp, 0))
            self.marks["netns bind"] = time.monotonic()
        groups = [self._sockets["tcp"]] if self.settings.sandbox_tcp else []
        groups.append(self._sockets["unix"])
        await asyncio.to_thread(self._hand, config, groups)
        # The child holds them now; the node's copies go (and with them any listener
        # of the job in the node's process).
        for group in groups:
            for sock in group:
                sock.close()
        self._sockets.clear()
        self.marks["proxy serving"] = time.monotonic()

    def _hand(self, config: ProxyConfig, groups: list[list[socket.socket]]) -> None:
        control = self._control
        assert control is not None, "open() first"
        control.settimeout(HANDOFF_TIMEOUT_S)
        try:
            send_job(control, config, groups, self.settings.job_max_connections)
            self.marks["proxy handed"] = time.monotonic()
            self._child = job_serving(control)
        except HandoffError as exc:
            raise ProxyHostDown(f"the node's inference proxy host: {exc}") from None

    async def close(self) -> None:
        try:
            await asyncio.to_thread(self._stop_child)
        finally:
            close_listeners(list(self._sockets.values()))
            self._sockets.clear()
            directory, self.directory = self.directory, None
            if directory is not None:
                await asyncio.to_thread(shutil.rmtree, directory, True)

    def _stop_child(self) -> None:
        """SIGTERM, up to STOP_GRACE_S for the child to go, then SIGKILL; the proxy host
        reaps it."""
        child, self._child = self._child, None
        control, self._control = self._control, None
        try:
            if child is not None:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(child, signal.SIGTERM)
                    # A pidfd reads as ready once its process has exited.
                    ready, _, _ = select.select([child], [], [], STOP_GRACE_S)
                    if not ready:
                        log.warning("a job's proxy did not stop in %gs: killed", STOP_GRACE_S)
                        signal.pidfd_send_signal(child, signal.SIGKILL)
        finally:
            if child is not None:
                os.close(child)
            if control is not None:
                control.close()
