"""A cold inference job's proxy in the node (SPEC §4.6): its TCP listener is bound inside
the sandbox's own network namespace, its Unix socket in a per-job directory; both go
with the job. Real Podman, real sandbox containers, a scripted Ollama behind a relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import threading
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
from podman import PodmanClient

from cynode.jobs.v1 import job_pb2
from cynode.node.inference.relay import InferenceRelay
from cynode.node.runtime import JobRunner, SandboxSettings, netns, ops
from cynode.node.runtime.job_proxy import job_proxy_root, remove_job_dirs, socket_root
from cynode.node.runtime.netns import bind_in_netns
from cynode.node.runtime.settings import InferencePodSettings
from tests.node.runtime.conftest import make_spec
from tests.node.runtime.inference_support import PROXY_IMAGE, ScriptedOllama, relay_to, serve

pytestmark = [pytest.mark.podman]

COMPLETED = job_pb2.JOB_STATUS_COMPLETED
# 127.0.0.1:11434 as /proc/net/tcp writes it, and the LISTEN state.
LISTENER = "0100007F:2CAA"
LISTEN = "0A"


@pytest.fixture(scope="module")
async def scripted() -> AsyncIterator[tuple[ScriptedOllama, str]]:
    upstream = ScriptedOllama()
    async for url in serve(upstream.app()):
        yield upstream, url


@pytest.fixture(scope="module")
async def relay(
    scripted: tuple[ScriptedOllama, str], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[InferenceRelay]:
    relay = await relay_to(tmp_path_factory.mktemp("jrelay"), scripted[1])
    yield relay
    await relay.close()


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


def socket_inodes() -> set[str]:
    """The inodes of the sockets this process holds."""
    held = set()
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            target = str(fd.readlink())
            if target.startswith("socket:["):
                held.add(target[len("socket:[") : -1])
    return held


def look_from_the_host(pid: int) -> dict[str, set[str]]:
    """The 127.0.0.1:11434 listeners in the sandbox's netns and in the node's, and which
    of the sandbox's the node holds."""
    sandbox = listening_inodes(Path(f"/proc/{pid}/net/tcp").read_text())
    node = listening_inodes(Path("/proc/self/net/tcp").read_text())
    return {"sandbox": sandbox, "node": node, "held": sandbox & socket_inodes()}


@pytest.mark.usefixtures("clean_node")
async def test_the_listener_is_in_the_sandbox_and_not_on_the_host(
    podman_client: PodmanClient,
    settings: SandboxSettings,
    relay: InferenceRelay,
    scripted: tuple[ScriptedOllama, str],
) -> None:
    seen: dict[str, set[str]] = {}
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
    assert len(seen["sandbox"]) == 1 and seen["held"] == seen["sandbox"], seen
    assert not seen["sandbox"] & seen["node"], seen
    # Only the allowed path reached the upstream.
    assert [s.path for s in upstream.seen] == ["/api/tags"]


@pytest.mark.usefixtures("clean_node")
async def test_the_listeners_and_the_directory_go_with_the_job(
    podman_client: PodmanClient, settings: SandboxSettings, relay: InferenceRelay
) -> None:
    held: dict[str, str] = {}
    runner: JobRunner
    pod = cold(settings, relay)
    assert pod.inference is not None
    root = socket_root(pod.inference)

    async def look(_: datetime) -> None:
        [directory] = list(root.iterdir())
        held["socket"] = str(directory / "proxy.sock")
        held["mode"] = oct(directory.stat().st_mode & 0o777)
        held["socket mode"] = oct((directory / "proxy.sock").stat().st_mode & 0o777)

    runner = JobRunner(podman_client, pod, on_started=look)
    result = await runner.run(make_spec(use_inference=True, commands=["true"]))
    assert result.status == COMPLETED, result
    assert (held["mode"], held["socket mode"]) == ("0o711", "0o666")
    assert list(root.iterdir()) == []
    with pytest.raises(OSError), socket.socket(socket.AF_UNIX) as client:
        client.connect(held["socket"])


@pytest.mark.usefixtures("clean_node")
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
