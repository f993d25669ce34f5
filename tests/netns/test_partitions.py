"""Partitions and degraded links between real hosts (network namespaces): TLS and mTLS
everywhere, short and long cuts, a flapping link, an orchestrator restart, refused
handshakes, and a capture with no secret in clear. Each scenario prints jobs created,
results stored, duplicates and lost."""

from __future__ import annotations

import secrets
import subprocess
import time
from pathlib import Path

import pytest

from tests.netns.cluster import Cluster, Counts
from tests.netns.topology import Topology

pytestmark = [pytest.mark.slow, pytest.mark.podman, pytest.mark.timeout(600)]


def report(
    capsys: pytest.CaptureFixture[str], scenario: str, counts: Counts, extra: str = ""
) -> None:
    with capsys.disabled():
        print(f"\n{counts.line(scenario)}{extra}", flush=True)
    assert counts.duplicates == 0 and counts.lost == 0, counts
    assert counts.stored == counts.created


def echo_task(cluster: Cluster, tag: str, sleep: float = 0) -> str:
    commands = [f"sleep {sleep}"] if sleep else []
    return cluster.create([*commands, f"echo {tag}"])


def test_a_task_runs_across_hosts_and_the_wire_shows_no_secret(
    cluster: Cluster, topo: Topology, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    marker = f"prompt-marker-{secrets.token_hex(8)}"
    pcaps = {name: tmp_path / f"{name}.pcap" for name in ("node-a", "node-b", "client")}
    dumps = [
        subprocess.Popen(topo.capture_argv(name, str(path)), stderr=subprocess.DEVNULL)
        for name, path in pcaps.items()
    ]
    time.sleep(1.0)
    try:
        cluster.login()  # the password crosses the client's link
        task = cluster.create([f"echo {marker}"])
        cluster.wait_done([task], 60)
    finally:
        time.sleep(0.5)
        for dump in dumps:
            dump.terminate()
            dump.wait(10)
    report(capsys, "tls round trip", cluster.counts([task], lambda _: marker))
    wire = b"".join(path.read_bytes() for path in pcaps.values())
    assert len(wire) > 2000, "the capture saw no traffic"
    secrets_in_clear = {
        "psk": cluster.psk,
        "password": cluster.admin_password,
        "node jwt a": cluster.session_jwt("node-a"),
        "node jwt b": cluster.session_jwt("node-b"),
        "access token": cluster.token,
        "prompt text": marker,
    }
    found = [what for what, value in secrets_in_clear.items() if value.encode() in wire]
    with capsys.disabled():
        print(f"[netns] capture: {len(wire)} bytes on 3 links, secrets in clear: {found or 'none'}")
    assert found == []
