"""Test hosts on this machine: network namespaces joined by veth pairs to a bridge.

    [ns switch: bridge br0]
        ├── veth ── [ns orch]    198.18.0.1/24
        ├── veth ── [ns node-a]  198.18.0.2/24
        ├── veth ── [ns node-b]  198.18.0.3/24
        └── veth ── [ns client]  198.18.0.9/24

Addresses come from 198.18.0.0/15 (RFC 2544, benchmarking) and exist only inside these
namespaces: the root namespace gets no address and no route, so nothing a test does
can leave the machine. Each host's link can be cut (its switch-side veth set down) and
restored without touching the others.

Processes run in a host with `nsenter --net=...` (not `ip netns exec`: that remounts
/sys, hiding the cgroup mounts runc needs, so Podman would fail inside). The test's own
client calls run in a thread that `setns`-ed into the client host.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from cynode.testing import pid_alive

PREFIX = "cyn"
NETNS_DIR = "/run/netns"
# One file per namespace holding the pid that made it (kept out of NETNS_DIR, which
# `ip netns list` reads).
OWNERS_DIR = "/run/cyn-netns-owners"
CLONE_NEWNET = 0x40000000
T = TypeVar("T")

HOSTS = {
    "orch": "198.18.0.1",
    "node-a": "198.18.0.2",
    "node-b": "198.18.0.3",
    "client": "198.18.0.9",
}


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


def _owner_alive(netns: str) -> bool:
    try:
        pid = int((Path(OWNERS_DIR) / netns).read_text())
    except (OSError, ValueError):
        return False
    return pid_alive(pid)


def stale_namespaces() -> list[str]:
    """Ours (this prefix) whose creating process is gone: a run running in parallel (pytest
    and behave, or two checkouts) keeps its namespaces."""
    root = Path(NETNS_DIR)
    if not root.is_dir():
        return []
    ours = sorted(p.name for p in root.iterdir() if p.name.startswith(PREFIX))
    return [name for name in ours if not _owner_alive(name)]


def remove_stale() -> None:
    """Namespaces a crashed earlier run left behind, and the processes still in them."""
    for name in stale_namespaces():
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            pids = subprocess.run(
                ["ip", "netns", "pids", name], capture_output=True, text=True, timeout=20
            ).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            _ip("netns", "del", name)
        (Path(OWNERS_DIR) / name).unlink(missing_ok=True)


def _add_netns(netns: str) -> None:
    _ip("netns", "add", netns)
    Path(OWNERS_DIR).mkdir(parents=True, exist_ok=True)
    (Path(OWNERS_DIR) / netns).write_text(str(os.getpid()))


def _del_netns(netns: str) -> None:
    with contextlib.suppress(subprocess.CalledProcessError):
        _ip("netns", "del", netns)
    (Path(OWNERS_DIR) / netns).unlink(missing_ok=True)


@dataclass
class Host:
    name: str
    netns: str
    address: str
    # The switch-side end of this host's veth (what `cut` sets down).
    switch_veth: str

    def argv(self, *argv: str) -> list[str]:
        return ["nsenter", f"--net={NETNS_DIR}/{self.netns}", *argv]


@dataclass
class Topology:
    run_id: str = field(default_factory=lambda: secrets.token_hex(3))
    hosts: dict[str, Host] = field(default_factory=dict)
    switch: str = ""
    _client: ThreadPoolExecutor | None = None

    def create(self) -> Topology:
        remove_stale()
        self.switch = f"{PREFIX}{self.run_id}sw"
        _add_netns(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for index, (name, address) in enumerate(HOSTS.items()):
            netns = f"{PREFIX}{self.run_id}{name}"
            # Interface names are at most 15 characters.
            inner, outer = f"{PREFIX}{self.run_id}h{index}", f"{PREFIX}{self.run_id}s{index}"
            _add_netns(netns)
            self.hosts[name] = Host(name, netns, address, outer)
            _ip("link", "add", inner, "type", "veth", "peer", "name", outer)
            _ip("link", "set", inner, "netns", netns)
            _ip("link", "set", outer, "netns", self.switch)
            _ip("-n", self.switch, "link", "set", outer, "master", "br0", "up")
            _ip("-n", netns, "link", "set", "lo", "up")
            _ip("-n", netns, "link", "set", inner, "name", "eth0")
            _ip("-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", netns, "link", "set", "eth0", "up")
        return self

    def destroy(self) -> None:
        if self._client is not None:
            self._client.shutdown(wait=False, cancel_futures=True)
        for host in self.hosts.values():
            _del_netns(host.netns)
        if self.switch:
            _del_netns(self.switch)

    def cut(self, name: str) -> None:
        _ip("-n", self.switch, "link", "set", self.hosts[name].switch_veth, "down")

    def restore(self, name: str) -> None:
        _ip("-n", self.switch, "link", "set", self.hosts[name].switch_veth, "up")

    def capture_argv(self, name: str, pcap: str) -> list[str]:
        """tcpdump on the switch side of `name`'s link: what crossed the wire."""
        veth = self.hosts[name].switch_veth
        return [
            "nsenter",
            f"--net={NETNS_DIR}/{self.switch}",
            "tcpdump",
            # Each packet handed over as it arrives: otherwise the kernel passes them on
            # about once a second, and whatever is still held when tcpdump is stopped is lost.
            "--immediate-mode",
            "-U",
            "-i",
            veth,
            "-w",
            pcap,
        ]

    @contextlib.contextmanager
    def capture(self, names: list[str], directory: Path) -> Iterator[dict[str, Path]]:
        """tcpdump on each named host's link while the block runs; yields the pcap paths,
        complete once the block has left."""
        pcaps = {name: directory / f"{name}.pcap" for name in names}
        dumps: list[subprocess.Popen[bytes]] = []
        try:
            for name, path in pcaps.items():
                dump = subprocess.Popen(self.capture_argv(name, str(path)), stderr=subprocess.PIPE)
                dumps.append(dump)
                # A fixed sleep is not enough on a loaded machine: the traffic of
                # interest may pass before tcpdump has opened the link.
                _wait_listening(dump)
            yield pcaps
        finally:
            time.sleep(0.5)  # the last packets flushed
            for dump in dumps:
                dump.terminate()
            for dump in dumps:
                try:
                    dump.wait(10)
                except subprocess.TimeoutExpired:
                    dump.kill()
                    dump.wait()
                if dump.stderr is not None:
                    dump.stderr.close()

    def in_client(self, fn: Callable[[], T]) -> T:
        """Runs `fn` in a thread that lives in the client host's network namespace, so
        the sockets it opens are that host's."""
        if self._client is None:
            path = f"{NETNS_DIR}/{self.hosts['client'].netns}"
            self._client = ThreadPoolExecutor(
                1, "netns-client", initializer=_enter_netns, initargs=(path,)
            )
        return self._client.submit(fn).result()


def _wait_listening(dump: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Until tcpdump says it is capturing (`listening on ...` on stderr)."""
    assert dump.stderr is not None
    deadline = time.monotonic() + timeout
    said = b""
    while b"listening on" not in said:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([dump.stderr], [], [], left)[0]:
            raise TimeoutError(f"tcpdump not capturing within {timeout:.0f}s: {said!r}")
        chunk = os.read(dump.stderr.fileno(), 4096)
        if not chunk:
            raise RuntimeError(f"tcpdump exited {dump.wait()}: {said!r}")
        said += chunk


def _enter_netns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {path}")
    finally:
        os.close(fd)


@contextlib.contextmanager
def topology() -> Iterator[Topology]:
    topo = Topology()
    try:
        yield topo.create()
    finally:
        topo.destroy()
