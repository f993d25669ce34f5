"""The proxy host (`python -m cynode.proxy host`): a job's sockets handed over its control
socket are served by a child of its own, capped in open files, gone when the job's
connection closes; bad messages are refused without harming the host."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from cynode.proxy import ProxyConfig, _host, parse_listen, parse_upstream
from cynode.proxy._config import ConfigError, config_from_json, config_to_json
from cynode.proxy._host import (
    DEFAULT_MAX_CONNECTIONS,
    HandoffError,
    ProxyHost,
    files_limit,
    job_serving,
    send_job,
)

from .conftest import ScriptedUpstream


def hand_job(
    control: socket.socket,
    config: ProxyConfig,
    groups: list[list[socket.socket]],
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> int:
    """Both halves of the node's side in a row, as JobProxy runs them."""
    send_job(control, config, groups, max_connections)
    return job_serving(control)


PROXY_ROOT = str(Path(_host.__file__).resolve().parents[2])


def child_pid(pidfd: int) -> int:
    for line in Path(f"/proc/self/fdinfo/{pidfd}").read_text().splitlines():
        if line.startswith("Pid:"):
            return int(line.split()[1])
    raise AssertionError("no pid")


def status(pid: int, name: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(name)


def open_files_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("limit")


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def exited(pidfd: int, within: float = 10) -> bool:
    ready, _, _ = select.select([pidfd], [], [], within)
    return bool(ready)


def get(url: str, unix: str = "") -> tuple[int, bytes]:
    if unix:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(unix)
            path = url.split("/", 3)[3]
            sock.sendall(f"GET /{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split()[1]), body
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Job:
    """A job as the node makes it: a TCP and a Unix listener, handed to the host."""

    def __init__(self, control_path: Path, upstream: str, directory: Path) -> None:
        self.tcp = socket.socket()
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(128)
        self.port = self.tcp.getsockname()[1]
        self.unix_path = str(directory / f"job-{self.port}.sock")
        self.unix = socket.socket(socket.AF_UNIX)
        self.unix.bind(self.unix_path)
        self.unix.listen(16)
        self.config = ProxyConfig(
            upstream=parse_upstream(upstream),
            listen=(parse_listen(f"127.0.0.1:{self.port}"), parse_listen(f"unix:{self.unix_path}")),
            timeout=10,
        )
        self.control = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.control.settimeout(20)
        self.control.connect(str(control_path))
        self.pidfd = -1

    def hand(self, max_connections: int = 8) -> int:
        self.pidfd = hand_job(self.control, self.config, [[self.tcp], [self.unix]], max_connections)
        # The child holds them now.
        self.tcp.close()
        self.unix.close()
        return child_pid(self.pidfd)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def end(self, terminate: bool = False) -> bool:
        """Closes the job's connection (its child stops), after a SIGTERM through the
        child's pidfd with `terminate` (as the node does)."""
        if terminate:
            signal.pidfd_send_signal(self.pidfd, signal.SIGTERM)
        self.control.close()
        gone = exited(self.pidfd)
        os.close(self.pidfd)
        return gone


@pytest.fixture
def host_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    control = tmp_path / "host.sock"
    env = dict(os.environ, PYTHONPATH=PROXY_ROOT)
    # To a file: a pipe nobody reads would stop the host once it is full.
    log = (tmp_path / "host.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cynode.proxy", "host", "--control", f"unix:{control}"],
        env=env,
        stderr=log,
    )
    try:
        for _ in range(400):
            if control.is_socket():
                break
            time.sleep(0.025)
        else:
            pytest.fail("the proxy host never made its control socket")
        yield proc, control
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        proc.kill()
        proc.wait()
        log.close()


async def test_a_job_is_served_by_a_child_of_its_own_and_goes_with_its_connection(
    host_process: tuple[subprocess.Popen[bytes], Path],
    upstream: ScriptedUpstream,
    tmp_path: Path,
) -> None:
    proc, control = host_process
    job = Job(control, upstream.url, tmp_path)
    pid = await asyncio.to_thread(job.hand, 8)
    assert pid != proc.pid and int(status(pid, "PPid")) == proc.pid
    assert open_files_limit(pid) == files_limit(8)
    # Not dumpable: its /proc entries belong to root, not to its uid.
    assert await asyncio.to_thread(get, f"{job.url}/api/tags") == (200, b'{"models": []}')
    code, _ = await asyncio.to_thread(get, f"{job.url}/api/pull")
    assert code == 403
    code, _ = await asyncio.to_thread(get, f"{job.url}/api/ps")
    assert code == 404
    assert (await asyncio.to_thread(get, "http://x/healthz", job.unix_path))[0] == 200
    assert [s.path for s in upstream.seen] == ["/api/tags"]
    # A second job: another child.
    other = Job(control, upstream.url, tmp_path)
    other_pid = await asyncio.to_thread(other.hand)
    assert other_pid not in (pid, proc.pid)
    assert await asyncio.to_thread(job.end)
    assert await asyncio.to_thread(other.end)
    await asyncio.sleep(0.2)  # reaped on SIGCHLD
    assert not alive(pid) and not alive(other_pid)
    assert proc.poll() is None


def test_a_job_cannot_open_connections_without_end(
    host_process: tuple[subprocess.Popen[bytes], Path], tmp_path: Path
) -> None:
    _, control = host_process
    job = Job(control, "http://127.0.0.1:9", tmp_path)
    pid = job.hand(max_connections=4)
    limit = files_limit(4)
    held = []
    try:
        for _ in range(limit + 60):
            held.append(socket.create_connection(("127.0.0.1", job.port), timeout=5))
        time.sleep(1.0)
        files = len(list(Path(f"/proc/{pid}/fd").iterdir()))
        assert files <= limit, files
    finally:
        for sock in held:
            sock.close()
    # Once the job lets go, its proxy serves again (asyncio takes up accepting).
    for _ in range(100):
        with contextlib.suppress(OSError):
            if get(f"{job.url}/healthz")[0] == 200:
                break
        time.sleep(0.1)
    else:
        pytest.fail("the proxy did not serve again")
    assert job.end()


def test_bad_messages_are_refused_and_the_host_goes_on(
    host_process: tuple[subprocess.Popen[bytes], Path], tmp_path: Path
) -> None:
    proc, control = host_process
    for message in (b"not json", json.dumps({"config": "{}", "counts": []}).encode()):
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as conn:
            conn.settimeout(10)
            conn.connect(str(control))
            conn.send(message)
            answer = json.loads(conn.recv(4096))
            assert "error" in answer
    # Sockets that do not match the listeners.
    job = Job(control, "http://127.0.0.1:9", tmp_path)
    with pytest.raises(HandoffError, match="socket"):
        hand_job(job.control, job.config, [[job.tcp]])
    job.control.close()
    # A connection that closes without a job, then a good job.
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as conn:
        conn.connect(str(control))
    good = Job(control, "http://127.0.0.1:9", tmp_path)
    good.hand()
    assert get(f"{good.url}/healthz")[0] == 200
    assert good.end()
    assert proc.poll() is None


def test_sigterm_stops_the_children_and_the_host(
    host_process: tuple[subprocess.Popen[bytes], Path], tmp_path: Path
) -> None:
    proc, control = host_process
    job = Job(control, "http://127.0.0.1:9", tmp_path)
    job.hand()
    proc.terminate()
    assert proc.wait(10) == 0
    assert exited(job.pidfd)
    assert not control.exists()
    os.close(job.pidfd)


def test_a_closed_host_fails_the_handoff(tmp_path: Path) -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    right.close()
    config = ProxyConfig(upstream=parse_upstream("http://127.0.0.1:9"))
    with pytest.raises(HandoffError, match="did not take"):
        hand_job(left, config, [[]])
    left.close()
    for answer, error in ((b"", "closed"), (b"garbage", "unreadable"), (b'{"serving": 1}', "None")):
        left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        if answer:
            right.send(answer)  # before the job is even sent: the node reads it as the answer
        else:
            right.shutdown(socket.SHUT_WR)
        with pytest.raises(HandoffError, match=error):
            hand_job(left, config, [[]])
        left.close()
        right.close()


def test_the_host_runs_in_this_process_too(tmp_path: Path) -> None:
    """The control loop in-process (the children fork from here): one job, a bad
    message, a connection without a job, then SIGTERM."""
    host = ProxyHost(str(tmp_path / "c.sock"), 4)
    host.bind()
    outcome: dict[str, object] = {}

    def node() -> None:
        try:
            job = Job(tmp_path / "c.sock", "http://127.0.0.1:9", tmp_path)
            outcome["pid"] = job.hand()
            outcome["health"] = get(f"{job.url}/healthz")[0]
            # A child forked from this process holds this end too: a signal stops it.
            outcome["gone"] = job.end(terminate=True)
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as conn:
                conn.settimeout(10)
                conn.connect(str(tmp_path / "c.sock"))
                conn.send(b"{}")
                outcome["bad"] = json.loads(conn.recv(4096))
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as conn:
                conn.connect(str(tmp_path / "c.sock"))
            # A child still serving when the host stops is stopped with it.
            last = Job(tmp_path / "c.sock", "http://127.0.0.1:9", tmp_path)
            last.hand()
            outcome["last"] = last
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=node)
    thread.start()
    assert host.run() == 0
    thread.join(10)
    assert signal.getsignal(signal.SIGTERM) is before
    assert outcome["health"] == 200 and outcome["gone"] is True, outcome
    assert "error" in outcome["bad"]  # type: ignore[operator]
    last = outcome["last"]
    assert isinstance(last, Job) and exited(last.pidfd)
    assert not host.children and not (tmp_path / "c.sock").exists()


async def test_serve_job_answers_serving_and_stops_when_the_node_lets_go(tmp_path: Path) -> None:
    node, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    config = ProxyConfig(
        upstream=parse_upstream("http://127.0.0.1:9"), listen=(parse_listen(f"127.0.0.1:{port}"),)
    )
    task = asyncio.create_task(_host.serve_job(config, [[listener]], child))
    data, fds, _, _ = await asyncio.to_thread(socket.recv_fds, node, 4096, 1)
    assert json.loads(data) == {"serving": os.getpid()} and len(fds) == 1
    os.close(fds[0])
    assert (await asyncio.to_thread(get, f"http://127.0.0.1:{port}/healthz"))[0] == 200
    node.close()
    assert await asyncio.wait_for(task, 10) == 0


async def test_serve_job_reports_a_server_that_cannot_start() -> None:
    node, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    closed = socket.socket()
    closed.close()
    config = ProxyConfig(upstream=parse_upstream("http://127.0.0.1:9"))
    assert await _host.serve_job(config, [[closed]], child) == 1
    assert "cannot serve" in json.loads(node.recv(4096))["error"]
    node.close()
    child.close()


def test_main_refuses_what_it_cannot_use(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        _host.main(["--control", "tcp:1"])
    assert _host.main(["--control", f"unix:{tmp_path}/missing/c.sock"]) == 1


def test_the_config_goes_over_the_wire_unchanged() -> None:
    config = ProxyConfig(
        upstream=parse_upstream("unix:/run/cynode-upstream/relay.sock"),
        listen=(parse_listen("127.0.0.1:11434"), parse_listen("unix:/j/proxy.sock")),
        max_body_bytes=5,
        timeout=3.5,
        idle_timeout=7.0,
        max_in_flight=16,
    )
    assert config_from_json(config_to_json(config)) == config
    for bad in ("{}", "[]", '{"upstream": "ftp://x", "listen": []}'):
        with pytest.raises(ConfigError):
            config_from_json(bad)
