"""``python3 -m cynode.proxy host --control unix:/path``: the node's proxy host.

One long-lived process in a jailed container per node (SPEC §4.6): it serves the guarded
proxy of every cold inference job, each in a child process of its own. It listens on a
Unix SOCK_SEQPACKET control socket that only the node reaches. For a job the node
connects and sends one JSON message, `config` the job's ProxyConfig (`config_to_json`), with
the job's listening sockets attached (SCM_RIGHTS; the TCP one the node bound inside the
sandbox's network namespace, the Unix one in the job's directory), `counts` saying how
many belong to each `listen` entry. The host then forks a child for that job and forgets
the connection; the child:

- makes itself non-dumpable (no ptrace between the children of different jobs, which
  share the container's uid),
- caps its open files (RLIMIT_NOFILE), so a job cannot open connections without end,
- closes the control socket and every other job's connection,
- serves the sockets with `start_proxy` on a fresh event loop, and answers
  ``{"serving": <pid>}`` with a pidfd of itself attached (the node signals it through
  the pidfd, across the container's pid namespace, without a pid that could be reused),
- stops on SIGTERM or when the node's end of the connection closes.

The host itself stays single-threaded, with no event loop running, so fork() is safe;
it imports the server up front, so a child serves at once. It reaps its children on
SIGCHLD, and on SIGTERM stops them and exits. A connection that never sends is held
open: the node keeps one to learn when the host dies (its end reads EOF then).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import selectors
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from cynode.proxy._config import ConfigError, ProxyConfig, config_from_json, config_to_json

log = logging.getLogger("cynode.proxy.host")

# One message carries a job's config and its sockets; both are small.
MAX_MESSAGE = 64 * 1024
MAX_FDS = 16
# Files a child needs besides its job's connections: stdio, the control connection, the
# listeners, the event loop's epoll and self-pipe, aiohttp's own.
BASE_FILES = 32
DEFAULT_MAX_CONNECTIONS = 64
PR_SET_DUMPABLE = 4


def files_limit(max_connections: int) -> int:
    """RLIMIT_NOFILE of a job's child: each connection of the job takes one file, and
    one more while its request is forwarded (the upstream's connection)."""
    return BASE_FILES + 2 * max_connections


def _not_dumpable() -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE)")


class HandoffError(RuntimeError):
    """The proxy host did not take a job, or its child did not start serving."""


def send_job(
    control: socket.socket,
    config: ProxyConfig,
    groups: list[list[socket.socket]],
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> None:
    """The node's side, first half: sends a job's config and listening sockets
    (`groups`, one list per `config.listen` entry) on `control`, a connection to the
    host's control socket. `control` stays the job's: closing it stops the child."""
    message = {
        "config": config_to_json(config),
        "counts": [len(group) for group in groups],
        "max_connections": max_connections,
    }
    fds = [sock.fileno() for group in groups for sock in group]
    try:
        socket.send_fds(control, [json.dumps(message).encode()], fds)
    except OSError as exc:
        raise HandoffError(f"the proxy host did not take the job: {exc}") from None


def job_serving(control: socket.socket) -> int:
    """The node's side, second half: waits for the job's child to serve the sockets
    (`control`'s timeout applies) and returns the child's pidfd; HandoffError
    otherwise."""
    try:
        data, received, _, _ = socket.recv_fds(control, 4096, 1)
    except OSError as exc:
        raise HandoffError(f"the proxy host did not take the job: {exc}") from None
    try:
        answer = json.loads(data) if data else {"error": "the proxy host closed the connection"}
    except ValueError:
        answer = {"error": f"unreadable answer {data[:80]!r}"}
    if "serving" in answer and received:
        return received[0]
    for fd in received:
        os.close(fd)
    raise HandoffError(f"the job's proxy did not start: {answer.get('error')}")


class ProxyHost:
    """The control loop: accept, receive a job, fork its child, reap."""

    def __init__(self, control_path: str, max_connections: int) -> None:
        self.control_path = control_path
        self.max_connections = max_connections
        self.children: set[int] = set()
        self._selector = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._pending: dict[int, socket.socket] = {}
        self._stopping = False

    def bind(self) -> None:
        path = Path(self.control_path)
        with contextlib.suppress(FileNotFoundError):
            if path.is_socket():
                path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind(self.control_path)
        # The node (root) alone connects; the directory is the container's own.
        path.chmod(0o600)
        listener.listen(64)
        self._listener = listener
        self._selector.register(listener, selectors.EVENT_READ, "accept")

    def run(self) -> int:
        """Until SIGTERM: then the children are stopped and reaped."""
        assert self._listener is not None, "bind() first"
        for sock in (self._wake_r, self._wake_w):
            sock.setblocking(False)
        wakeup = signal.set_wakeup_fd(self._wake_w.fileno())
        handlers = {
            signum: signal.signal(signum, handler)
            for signum, handler in (
                (signal.SIGCHLD, lambda *_: None),  # wakes the selector (wakeup fd)
                (signal.SIGTERM, self._note_stop),
                (signal.SIGINT, self._note_stop),
            )
        }
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        log.info("proxy host on %s (pid %d)", self.control_path, os.getpid())
        try:
            while not self._stopping:
                for key, _ in self._selector.select():
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        with contextlib.suppress(BlockingIOError):
                            while self._wake_r.recv(512):
                                pass
                    else:
                        self._job(key.fileobj)  # type: ignore[arg-type]
                self.reap()
        finally:
            self._shutdown()
            signal.set_wakeup_fd(wakeup)
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
        return 0

    def _note_stop(self, signum: int, frame: object) -> None:
        self._stopping = True

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            conn, _ = self._listener.accept()
        except OSError as exc:  # EMFILE and the like: the node's connect fails, it retries
            log.warning("control accept: %s", exc)
            return
        self._pending[conn.fileno()] = conn
        self._selector.register(conn, selectors.EVENT_READ, "job")

    def _forget(self, conn: socket.socket) -> None:
        self._selector.unregister(conn)
        self._pending.pop(conn.fileno(), None)
        conn.close()

    def _job(self, conn: socket.socket) -> None:
        try:
            data, fds, _, _ = socket.recv_fds(conn, MAX_MESSAGE, MAX_FDS)
        except OSError as exc:
            log.warning("control receive: %s", exc)
            self._forget(conn)
            return
        if not data:  # the node closed a connection that carried no job
            for fd in fds:
                os.close(fd)
            self._forget(conn)
            return
        self._selector.unregister(conn)
        self._pending.pop(conn.fileno(), None)
        try:
            pid = os.fork()
        except OSError as exc:
            log.error("cannot fork a job's proxy: %s", exc)
            with contextlib.suppress(OSError):
                conn.send(json.dumps({"error": f"fork: {exc}"}).encode())
            pid = -1
        if pid == 0:
            code = 1
            try:
                code = self._child(conn, data, fds)
            finally:
                os._exit(code)
        for fd in fds:
            os.close(fd)
        conn.close()
        if pid > 0:
            self.children.add(pid)

    def _child(self, conn: socket.socket, data: bytes, fds: list[int]) -> int:
        # Nothing of the host's loop or of other jobs stays in a job's child.
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)
        self._selector.close()
        for sock in (self._listener, self._wake_r, self._wake_w, *self._pending.values()):
            if sock is not None:
                sock.close()
        self._pending.clear()
        try:
            message = json.loads(data)
            config = config_from_json(message["config"])
            counts = [int(n) for n in message["counts"]]
            max_connections = int(message.get("max_connections", self.max_connections))
            if sum(counts) != len(fds) or len(counts) != len(config.listen):
                raise ConfigError(f"{len(fds)} socket(s) for listeners {counts}")
            _not_dumpable()
            limit = files_limit(max_connections)
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
        except (ConfigError, OSError, KeyError, TypeError, ValueError) as exc:
            for fd in fds:
                os.close(fd)
            with contextlib.suppress(OSError):
                conn.send(json.dumps({"error": str(exc)}).encode())
            return 1
        sockets = [socket.socket(fileno=fd) for fd in fds]
        groups: list[list[socket.socket]] = []
        for count in counts:
            groups.append(sockets[:count])
            sockets = sockets[count:]
        import asyncio

        return asyncio.run(serve_job(config, groups, conn))

    def reap(self) -> None:
        while self.children:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            self.children.discard(pid)

    def _shutdown(self) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.children.clear()
        for conn in list(self._pending.values()):
            conn.close()
        if self._listener is not None:
            self._listener.close()
            with contextlib.suppress(FileNotFoundError):
                Path(self.control_path).unlink()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()


async def serve_job(
    config: ProxyConfig, groups: list[list[socket.socket]], conn: socket.socket
) -> int:
    """A job's child: serve until SIGTERM or until the node's end of `conn` closes."""
    import asyncio

    from cynode.proxy._listen import close_listeners
    from cynode.proxy._server import start_proxy

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        proxy = await start_proxy(config, groups)
    except Exception as exc:
        loop.remove_signal_handler(signal.SIGTERM)
        close_listeners(groups)
        with contextlib.suppress(OSError):
            conn.send(json.dumps({"error": f"cannot serve: {exc}"}).encode())
        return 1
    try:
        pidfd = os.pidfd_open(os.getpid())
        try:
            socket.send_fds(conn, [json.dumps({"serving": os.getpid()}).encode()], [pidfd])
        finally:
            os.close(pidfd)
        conn.setblocking(False)
        loop.add_reader(conn.fileno(), stop.set)  # a "stop", or EOF: the node is done
        await stop.wait()
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        loop.remove_reader(conn.fileno())
        conn.close()
        await proxy.close()
    return 0


def main(argv: Sequence[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="cynode-proxy host",
        description="Serve cold inference jobs' proxies, one forked child per job.",
    )
    parser.add_argument(
        "--control", required=True, metavar="unix:/PATH", help="the node's control socket"
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        metavar="N",
        help="a job's open connections, when the node's message names none "
        f"(default {DEFAULT_MAX_CONNECTIONS})",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    if not args.control.startswith("unix:/"):
        parser.error("--control must be unix:/absolute/path")
    # Imported before the first fork, so every child starts with the server loaded.
    import asyncio  # noqa: F401

    import cynode.proxy._server  # noqa: F401

    host = ProxyHost(args.control[len("unix:") :], args.max_connections)
    try:
        host.bind()
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 1
    return host.run()
