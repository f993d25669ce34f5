"""Fixtures for the multi-host tests: the namespaces (always removed, stale ones from a
crashed run first) and the orchestrator plus two nodes running on them."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns.cluster import Cluster
from tests.netns.topology import Topology, remove_stale


def _require_netns() -> None:
    # Never skipped: a host that cannot run these fails them, saying why.
    for tool in ("ip", "nsenter", "tcpdump", "podman"):
        if shutil.which(tool) is None:
            pytest.fail(f"netns tests need {tool} (tools/system-deps.sh)")


@pytest.fixture(scope="module")
def topo() -> Iterator[Topology]:
    _require_netns()
    remove_stale()
    topo = Topology()
    request_failed = True
    try:
        topo.create()
        request_failed = False
        yield topo
    finally:
        topo.destroy()
        assert request_failed or not [
            h for h in topo.hosts.values() if Path(f"/run/netns/{h.netns}").exists()
        ]


@pytest.fixture(scope="module")
def cluster(topo: Topology, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(topo, tmp_path_factory.mktemp("netns"))
    try:
        cluster.start_orchestrator()
        cluster.start_node("node-a")
        cluster.start_node("node-b")
        cluster.login()
        yield cluster
    finally:
        cluster.stop_all()
