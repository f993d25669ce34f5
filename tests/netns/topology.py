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
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

PREFIX = "cyn"
NETNS_DIR = "/run/netns"
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


def stale_namespaces() -> list[str]:
    root = Path(NETNS_DIR)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.name.startswith(PREFIX))


def remove_stale() -> None:
    """Namespaces a crashed earlier run left behind (this prefix only)."""
    for name in stale_namespaces():
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("netns", "del", name)


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
        _ip("netns", "add", self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for index, (name, address) in enumerate(HOSTS.items()):
            netns = f"{PREFIX}{self.run_id}{name}"
            # Interface names are at most 15 characters.
            inner, outer = f"{PREFIX}{self.run_id}h{index}", f"{PREFIX}{self.run_id}s{index}"
            _ip("netns", "add", netns)
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
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("netns", "del", host.netns)
        if self.switch:
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("netns", "del", self.switch)

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
            "-U",
            "-i",
            veth,
            "-w",
            pcap,
        ]

    def in_client(self, fn: Callable[[], T]) -> T:
        """Runs `fn` in a thread that lives in the client host's network namespace, so
        the sockets it opens are that host's."""
        if self._client is None:
            path = f"{NETNS_DIR}/{self.hosts['client'].netns}"
            self._client = ThreadPoolExecutor(
                1, "netns-client", initializer=_enter_netns, initargs=(path,)
            )
        return self._client.submit(fn).result()


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
