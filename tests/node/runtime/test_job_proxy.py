"""A cold inference job's proxy (SPEC §4.6): its TCP listener is bound inside the
sandbox's own network namespace, its Unix socket in a per-job directory, and both are
served by a child the node's proxy host forks for the job (uid 10000 in the jailed
container, not the node); all of it goes with the job. Real Podman, real sandbox and
proxy host containers, a scripted Ollama behind a relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import pytest
from podman import PodmanClient

from cynode.jobs.v1 import job_pb2
from cynode.node.inference.proxy_host import ProxyHost
from cynode.node.inference.relay import InferenceRelay
from cynode.node.runtime import JobRunner, SandboxSettings, netns, ops
from cynode.node.runtime.job_proxy import (
    JobProxy,
    ProxyHostDown,
    host_pid_file,
    job_proxy_root,
    proxy_host_socket,
    remove_job_dirs,
    socket_root,
)
from cynode.node.runtime.netns import bind_in_netns
from cynode.node.runtime.settings import InferencePodSettings
from cynode.proxy._host import files_limit
from tests.node.runtime.conftest import make_spec
from tests.node.runtime.inference_support import (
    PROXY_IMAGE,
    ScriptedOllama,
    proxy_host_for,
    relay_to,
)

pytestmark = [pytest.mark.podman]

COMPLETED = job_pb2.JOB_STATUS_COMPLETED
FAILED = job_pb2.JOB_STATUS_FAILED
# 127.0.0.1:11434 as /proc/net/tcp writes it, and the LISTEN state.
LISTENER = "0100007F:2CAA"
LISTEN = "0A"


@pytest.fixture(scope="module")
async def relay(
    scripted: tuple[ScriptedOllama, str], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[InferenceRelay]:
    relay = await relay_to(tmp_path_factory.mktemp("jrelay"), scripted[1])
    yield relay
    await relay.close()


@pytest.fixture(scope="module")
async def proxy_host(
    relay: InferenceRelay, podman_client: PodmanClient
) -> AsyncIterator[ProxyHost]:
    # Sized for jobs of up to WIDE connections: open files past the engine's 1024.
    async with proxy_host_for(podman_client, relay, job_max_connections=WIDE) as host:
        yield host


WIDE = 600


def cold(settings: SandboxSettings, relay: InferenceRelay, **changes: object) -> SandboxSettings:
    pod = InferencePodSettings(relay_socket=str(relay.socket_path), proxy_image=PROXY_IMAGE)
    return dataclasses.replace(settings, inference=dataclasses.replace(pod, **changes))  # type: ignore[arg-type]


def listening_inodes(tcp_table: str) -> set[str]:
    """The inodes of the sockets listening on 127.0.0.1:11434 in a /proc/net/tcp table."""
    inodes = set()
    for line in tcp_table.splitlines()[1:]:
        fields = line.split()
        if fields[1] == LISTENER and fields[3] == LISTEN:
            inodes.add(fields[9])
    return inodes


def socket_inodes(pid: int | str = "self") -> set[str]:
    """The inodes of the sockets a process holds (this one by default)."""
    held = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            target = str(fd.readlink())
            if target.startswith("socket:["):
                held.add(target[len("socket:[") : -1])
    return held


def holders(inodes: set[str]) -> list[int]:
    """The processes that hold one of these sockets."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):  # gone meanwhile
                if inodes & socket_inodes(entry.name):
                    found.append(int(entry.name))
    return found


def uid_inside(pid: int) -> int:
    """The effective uid of `pid` as its own user namespace sees it."""
    host_uid = int(Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[1])
    for line in Path(f"/proc/{pid}/uid_map").read_text().splitlines():
        inside, outside, count = (int(n) for n in line.split())
        if outside <= host_uid < outside + count:
            return host_uid - outside + inside
    raise AssertionError(f"uid {host_uid} of {pid} is not mapped")


def status_field(pid: int, name: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {name} for {pid}")


def open_files_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError(f"no open files limit for {pid}")


def look_from_the_host(pid: int) -> dict[str, object]:
    """The 127.0.0.1:11434 listeners in the sandbox's netns and in the node's, which of
    the sandbox's the node holds, and who holds them."""
    sandbox = listening_inodes(Path(f"/proc/{pid}/net/tcp").read_text())
    node = listening_inodes(Path("/proc/self/net/tcp").read_text())
    child = holders(sandbox)
    seen: dict[str, object] = {
        "sandbox": sandbox,
        "node": node,
        "held": sandbox & socket_inodes(),
        "holders": child,
    }
    if len(child) == 1:
        seen["uid"] = uid_inside(child[0])
        seen["parent"] = int(status_field(child[0], "PPid"))
        seen["files"] = open_files_limit(child[0])
    return seen


@pytest.mark.usefixtures("clean_node")
async def test_the_listener_is_in_the_sandbox_and_served_by_the_proxy_host_not_the_node(
    podman_client: PodmanClient,
    settings: SandboxSettings,
    relay: InferenceRelay,
    proxy_host: ProxyHost,
    scripted: tuple[ScriptedOllama, str],
) -> None:
    seen: dict[str, object] = {}
    runner: JobRunner

    async def look(_: datetime) -> None:
        # While the job runs: the listener in the sandbox's netns, seen from the host.
        container_id = runner.container_id
        assert container_id is not None
        pid = await asyncio.to_thread(ops.container_pid, podman_client, container_id)
        seen.update(await asyncio.to_thread(look_from_the_host, pid))

    upstream, _ = scripted
    upstream.seen.clear()
    spec = make_spec(
        use_inference=True,
        commands=[
            "sleep 0.5",
            "ls /sys/class/net",
            "curl -s -o /dev/null -w 'tags %{http_code}\\n' $OLLAMA_BASE_URL/api/tags",
            "curl -s -o /dev/null -w 'pull %{http_code}\\n' $OLLAMA_BASE_URL/api/pull -d '{}'",
            "curl -s -o /dev/null -w 'other %{http_code}\\n' $OLLAMA_BASE_URL/api/ps",
            "ls /run/cynode-inference >/dev/null 2>&1 && echo dir-listed || echo dir-closed",
            "test -S /run/cynode-inference/proxy.sock && echo proxy-sock",
            f"test -e {relay.socket_path} && echo relay-path || echo no-relay-path",
            "test -e /run/cynode-upstream && echo upstream-dir || echo no-upstream-dir",
        ],
    )
    runner = JobRunner(podman_client, cold(settings, relay), on_started=look)
    result = await runner.run(spec)
    assert result.status == COMPLETED, result
    assert result.stdout.decode().splitlines() == [
        "lo",
        "tags 200",
        "pull 403",
        "other 404",
        "dir-closed",
        "proxy-sock",
        "no-relay-path",
        "no-upstream-dir",
    ]
    sandbox = seen["sandbox"]
    assert isinstance(sandbox, set) and len(sandbox) == 1, seen
    assert not sandbox & seen["node"], seen  # type: ignore[operator]
    # The node holds no listener of the job: one process does, the job's child in the
    # proxy host (the host's python, under the container's init), as uid 10000 there.
    assert seen["held"] == set(), seen
    child_pids = seen["holders"]
    assert isinstance(child_pids, list) and len(child_pids) == 1, seen
    assert child_pids[0] != os.getpid()
    assert seen["uid"] == 10000, seen
    assert proxy_host.container_id is not None
    host_pid = await asyncio.to_thread(ops.container_pid, podman_client, proxy_host.container_id)
    assert int(status_field(int(str(seen["parent"])), "PPid")) == host_pid, seen
    assert seen["files"] == files_limit(InferencePodSettings("").job_max_connections), seen
    # Only the allowed path reached the upstream.
    assert [s.path for s in upstream.seen] == ["/api/tags"]


@pytest.mark.usefixtures("clean_node", "proxy_host")
async def test_the_listeners_the_child_and_the_directory_go_with_the_job(
    podman_client: PodmanClient, settings: SandboxSettings, relay: InferenceRelay
) -> None:
    held: dict[str, str] = {}
    children: list[int] = []
    runner: JobRunner
    pod = cold(settings, relay)
    assert pod.inference is not None
    root = socket_root(pod.inference)

    async def look(_: datetime) -> None:
        [directory] = list(root.iterdir())
        held["socket"] = str(directory / "proxy.sock")
        held["mode"] = oct(directory.stat().st_mode & 0o777)
        held["socket mode"] = oct((directory / "proxy.sock").stat().st_mode & 0o777)
        sock = next(iter(socket_inodes_of_path(directory / "proxy.sock")))
        children.extend(await asyncio.to_thread(holders, {sock}))

    runner = JobRunner(podman_client, pod, on_started=look)
    result = await runner.run(make_spec(use_inference=True, commands=["true"]))
    assert result.status == COMPLETED, result
    assert (held["mode"], held["socket mode"]) == ("0o711", "0o666")
    assert len(children) == 1, children
    assert not alive(children[0])
    assert list(root.iterdir()) == []
    with pytest.raises(OSError), socket.socket(socket.AF_UNIX) as client:
        client.connect(held["socket"])


@pytest.mark.usefixtures("clean_node", "proxy_host")
async def test_without_sandbox_tcp_nothing_listens_in_the_sandbox(
    podman_client: PodmanClient, settings: SandboxSettings, relay: InferenceRelay
) -> None:
    spec = make_spec(
        use_inference=True,
        commands=[
            "grep -c ' 0A ' /proc/net/tcp || true",
            'sock=$(python3 -c "import os,urllib.parse as u; '
            "print(u.unquote(os.environ['INFERENCE_PROXY_URL'][len('http+unix://'):]))\"); "
            'curl -s -o /dev/null -w "socket %{http_code}\\n" --unix-socket "$sock"'
            " http://proxy/api/tags",
        ],
    )
    result = await JobRunner(podman_client, cold(settings, relay, sandbox_tcp=False)).run(spec)
    assert result.status == COMPLETED, result
    assert result.stdout.decode().splitlines() == ["0", "socket 200"]


def containers_named(client: PodmanClient, name: str) -> list[str]:
    return [str(c.name) for c in client.containers.list(all=True) if c.name == name]


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def children_of(pid: int) -> list[int]:
    return [int(n) for n in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def socket_inodes_of_path(path: Path) -> set[str]:
    """The inodes of the listening Unix sockets bound at `path` (/proc/net/unix)."""
    found = set()
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[7] == str(path):
            found.add(fields[6])
    return found


@pytest.mark.usefixtures("clean_node")
async def test_two_jobs_get_two_children_of_the_one_host(
    podman_client: PodmanClient,
    settings: SandboxSettings,
    relay: InferenceRelay,
    proxy_host: ProxyHost,
) -> None:
    seen: list[dict[str, object]] = []
    runners: list[JobRunner] = []

    def looker(index: int) -> Callable[[datetime], Awaitable[None]]:
        async def look(_: datetime) -> None:
            container_id = runners[index].container_id
            assert container_id is not None
            pid = await asyncio.to_thread(ops.container_pid, podman_client, container_id)
            seen.append(await asyncio.to_thread(look_from_the_host, pid))

        return look

    spec = "sleep 1; curl -sf -o /dev/null $OLLAMA_BASE_URL/api/tags && echo ok"
    # The second job may hold more connections than the engine's default open files
    # would give its child: the proxy host's container was made for it.
    for index, changes in enumerate(({}, {"job_max_connections": WIDE})):
        pod = cold(settings, relay, **changes)
        runners.append(JobRunner(podman_client, pod, on_started=looker(index)))
    results = await asyncio.gather(
        *(runner.run(make_spec(use_inference=True, commands=[spec])) for runner in runners)
    )
    assert [r.stdout.decode() for r in results] == ["ok\n", "ok\n"], results
    children = [look["holders"] for look in seen]
    assert len(children) == 2 and all(len(c) == 1 for c in children), seen  # type: ignore[arg-type]
    assert children[0] != children[1], seen
    assert seen[0]["parent"] == seen[1]["parent"], seen
    limits = sorted(int(str(look["files"])) for look in seen)
    assert limits == [files_limit(64), files_limit(WIDE)] and limits[1] > 1024, seen


@pytest.mark.usefixtures("clean_node")
async def test_a_dead_proxy_host_fails_the_next_cold_job_and_comes_back(
    podman_client: PodmanClient,
    settings: SandboxSettings,
    scripted: tuple[ScriptedOllama, str],
    tmp_path: Path,
) -> None:
    relay = await relay_to(tmp_path / "relay", scripted[1])
    try:
        async with proxy_host_for(podman_client, relay) as host:
            assert host.container_id is not None
            init = await asyncio.to_thread(ops.container_pid, podman_client, host.container_id)
            # The host's python (the child of the container's init) dies.
            [python] = children_of(init)
            os.kill(python, signal.SIGKILL)
            for _ in range(200):
                if not alive(python):
                    break
                await asyncio.sleep(0.01)
            spec = make_spec(use_inference=True, commands=["curl -sf $OLLAMA_BASE_URL/api/tags"])
            result = await JobRunner(podman_client, cold(settings, relay)).run(spec)
            assert result.status == FAILED, result
            assert "proxy host is not running" in result.reason, result
            for _ in range(300):
                if host.running and host.restarts == 1:
                    break
                await asyncio.sleep(0.05)
            assert host.running and host.restarts == 1
            result = await JobRunner(podman_client, cold(settings, relay)).run(spec)
            assert result.status == COMPLETED, result
    finally:
        await relay.close()


def netns_of_this_thread() -> str:
    return str(Path(f"/proc/self/task/{threading.get_native_id()}/ns/net").readlink())


async def test_a_bind_in_a_netns_that_is_gone_fails_and_leaves_the_node_as_it_was() -> None:
    own = netns_of_this_thread()

    def bind() -> list[socket.socket]:
        raise AssertionError("never reached: the netns cannot be entered")

    with pytest.raises(OSError):
        await bind_in_netns(2**22 + 1, bind)
    assert netns_of_this_thread() == own


async def test_a_bind_that_fails_inside_the_netns_comes_back_out(tmp_path: Path) -> None:
    # The node's own netns as the target: what matters is that the thread comes back.
    def bind() -> list[socket.socket]:
        raise OSError("refused")

    with pytest.raises(OSError, match="refused"):
        await bind_in_netns(os.getpid(), bind)


def test_the_root_for_socket_dirs_is_short_enough_for_a_socket(tmp_path: Path) -> None:
    assert job_proxy_root(tmp_path) == tmp_path / "inference-jobs"
    deep = tmp_path / ("d" * 100)
    short = job_proxy_root(deep)
    assert short != deep / "inference-jobs" and short.is_dir()
    assert len(str(short / "jXXXXXXXX" / "proxy.sock")) < 108
    short.rmdir()
    (tmp_path / "inference-jobs" / "jleft").mkdir(parents=True)
    (tmp_path / "inference-jobs" / "stray-file").touch()
    assert remove_job_dirs(tmp_path / "inference-jobs") == 1
    assert remove_job_dirs(tmp_path / "missing") == 0


def test_setns_on_something_that_is_no_netns_raises() -> None:
    with Path(os.devnull).open("rb") as null, pytest.raises(OSError, match="setns"):
        netns._setns(null.fileno())


async def test_a_bind_whose_caller_gave_up_closes_what_it_made() -> None:
    made: list[socket.socket] = []
    go = threading.Event()

    def bind() -> list[socket.socket]:
        go.wait(5)
        sock = socket.socket()
        made.append(sock)
        return [sock]

    waiter = asyncio.ensure_future(bind_in_netns(os.getpid(), bind))
    await asyncio.sleep(0.05)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    go.set()
    for _ in range(100):
        if made and made[0].fileno() == -1:
            break
        await asyncio.sleep(0.02)
    assert made and made[0].fileno() == -1


async def test_a_control_socket_the_host_does_not_serve_gets_no_job(tmp_path: Path) -> None:
    # As if a job's child had put its own listener where the host's was.
    settings = InferencePodSettings(
        relay_socket=str(tmp_path / "relay" / "relay.sock"), job_socket_dir=str(tmp_path / "jobs")
    )
    control = proxy_host_socket(settings)
    control.parent.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as impostor:
        impostor.bind(str(control))
        impostor.listen(4)
        proxy = JobProxy(settings)
        with pytest.raises(ProxyHostDown, match="not running"):
            await proxy.open()  # no note of the host's pid
        host_pid_file(control).write_text(str(os.getpid() + 1))
        with pytest.raises(ProxyHostDown, match="not served by the node's inference proxy host"):
            await proxy.open()
        host_pid_file(control).write_text(str(os.getpid()))
        await proxy.open()  # the listener is the noted one
        await proxy.close()
    assert list((tmp_path / "jobs").iterdir()) == []


class SlowCreate:
    """A Podman client whose container creations take a while to come back."""

    def __init__(self, real: PodmanClient) -> None:
        self.real = real
        self.entered = threading.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)

    @property
    def containers(self) -> SlowCreate:
        return self

    def create(self, **kwargs: Any) -> object:
        made = self.real.containers.create(**kwargs)
        self.entered.set()
        time.sleep(0.5)
        return made

    def remove(self, *args: object, **kwargs: object) -> None:
        self.real.containers.remove(*args, **kwargs)  # type: ignore[arg-type]


async def test_a_proxy_host_closed_while_it_is_made_leaves_no_container(
    podman_client: PodmanClient, relay: InferenceRelay, tmp_path: Path
) -> None:
    settings = InferencePodSettings(
        relay_socket=str(relay.socket_path),
        proxy_image=PROXY_IMAGE,
        proxy_host_socket=str(tmp_path / "ctl" / "host.sock"),
    )
    slow = SlowCreate(podman_client)
    host = ProxyHost(lambda: cast(PodmanClient, slow), settings, labels={}, jobs=1)
    starting = asyncio.create_task(host.start())
    assert await asyncio.to_thread(slow.entered.wait, 10)
    # The node stops while the container is being created.
    starting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await starting
    await host.close()
    await asyncio.sleep(1.0)  # a creation left to itself would have ended by now
    assert await asyncio.to_thread(containers_named, podman_client, host.name) == []
