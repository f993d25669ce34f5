# behave ships no type hints, so its decorators are untyped.
# mypy: disable-error-code="untyped-decorator"
"""Steps for features/multihost: the hosts are tests.netns.topology.Topology, the processes
on them tests.netns.cluster.Cluster; the client's calls go out from the client host's
namespace, checks read the orchestrator's store (the root namespace has no route to the
hosts). `$MARKER` in a step's text stands for the scenario's fresh marker."""

from __future__ import annotations

import ipaddress
import re
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from behave import given, then, use_step_matcher, when

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.netns.cluster import LEASE_SECONDS, WORKER_API, Cluster  # noqa: E402
from tests.netns.topology import Topology  # noqa: E402

TEST_NET = ipaddress.ip_network("198.18.0.0/15")
NODE_HOSTS = ("node-a", "node-b")
# The client's link carries a login and a task creation, each a TLS session with the
# server's certificate: well over this much TCP payload. Less means the capture missed
# them and its "no secret in clear" would prove nothing. (The link-local IPv6 chatter
# of fresh links is not TCP, so it cannot fill this.)
MIN_CLIENT_TCP_BYTES = 2000
# A TLS handshake record (content type 22, legacy version 3.1 in a ClientHello).
TLS_HANDSHAKE = b"\x16\x03\x01"


def _topo(context: Any) -> Topology:
    topo = context.multihost.topo
    assert isinstance(topo, Topology), "no test hosts: the Background did not run"
    return topo


def _cluster(context: Any) -> Cluster:
    cluster = context.multihost.cluster
    assert isinstance(cluster, Cluster), "no cluster: the Background did not run"
    return cluster


def _ip_out(*argv: str) -> str:
    return subprocess.run(
        ["ip", *argv], check=True, capture_output=True, text=True, timeout=20
    ).stdout


def _in_test_net(ip_o_addr: str) -> list[str]:
    """The 198.18.0.0/15 addresses in `ip -o -4 addr` output."""
    found = []
    for line in ip_o_addr.splitlines():
        fields = line.split()
        if "inet" in fields:
            iface = ipaddress.ip_interface(fields[fields.index("inet") + 1])
            if iface.ip in TEST_NET:
                found.append(str(iface))
    return found


def _tcp_payload(pcap: Path) -> int:
    """Bytes of TCP payload in a pcap of Ethernet frames (IPv4 only: the hosts have no
    other addresses)."""
    data = pcap.read_bytes()
    order = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    total, at = 0, 24
    while at + 16 <= len(data):
        (length,) = struct.unpack_from(f"{order}I", data, at + 8)
        frame = data[at + 16 : at + 16 + length]
        at += 16 + length
        if len(frame) < 54 or frame[12:14] != b"\x08\x00" or frame[23] != socket.IPPROTO_TCP:
            continue
        ip_header = (frame[14] & 0x0F) * 4
        (ip_length,) = struct.unpack_from("!H", frame, 16)
        tcp_header = (frame[14 + ip_header + 12] >> 4) * 4
        total += ip_length - ip_header - tcp_header
    return total


def _nodes(cluster: Cluster) -> dict[str, tuple[str, str]]:
    rows = cluster.query("SELECT slug, status, worker_api_url FROM nodes")
    return {str(slug): (str(status), str(url)) for slug, status, url in rows}


def _heartbeat(cluster: Cluster, slug: str) -> str:
    rows = cluster.query("SELECT last_heartbeat_at FROM nodes WHERE slug = ?", slug)
    return str(rows[0][0])


def _report(context: Any, expected_stdout: str) -> None:
    counts = _cluster(context).counts([context.task_id], lambda _: expected_stdout)
    print(counts.line(context.scenario.name), file=sys.stderr, flush=True)


@given("test hosts in network namespaces joined by veth pairs to one switch")
def step_hosts(context: Any) -> None:
    multihost = context.multihost
    if multihost.topo is None:
        # Kept before create() so a half-made topology is still removed.
        multihost.topo = Topology()
        multihost.topo.create()
    topo = _topo(context)
    wanted = {row["host"]: row["address"] for row in context.table}
    assert sorted(wanted) == sorted(topo.hosts), (wanted, topo.hosts)
    for name, address in wanted.items():
        host = topo.hosts[name]
        assert ipaddress.ip_address(address) in TEST_NET, address
        link = _ip_out("-n", host.netns, "-o", "-d", "link", "show", "dev", "eth0")
        assert " veth " in link and "state UP" in link, link
        addrs = _ip_out("-n", host.netns, "-o", "-4", "addr", "show", "dev", "eth0")
        assert _in_test_net(addrs) == [f"{address}/24"], addrs
    # Nothing a scenario does can leave the machine: the root namespace is not on the net.
    assert _in_test_net(_ip_out("-o", "-4", "addr")) == []


@given("the orchestrator and two nodes running on them")
def step_cluster(context: Any) -> None:
    multihost = context.multihost
    if multihost.cluster is None:
        multihost.cluster = Cluster(_topo(context), multihost.tmp)
        multihost.cluster.start_orchestrator()
        for slug in NODE_HOSTS:
            multihost.cluster.start_node(slug)
    cluster = _cluster(context)
    for name, proc in cluster.procs.items():
        assert proc.alive(), f"{name} exited:\n{proc.text()[-3000:]}"
    # Each node registered from its own host, its worker API served over HTTPS there.
    hosts = _topo(context).hosts
    wanted = {
        slug: ("online", f"https://{hosts[slug].address}:{WORKER_API}") for slug in NODE_HOSTS
    }
    try:
        cluster.wait(lambda: _nodes(cluster) == wanted, 30)
    except TimeoutError:
        raise AssertionError(f"nodes {_nodes(cluster)}, wanted {wanted}") from None


@given("a capture on the links of the client, the orchestrator and both node hosts")
def step_capture(context: Any) -> None:
    multihost = context.multihost
    names = ["client", "orch", *NODE_HOSTS]
    context.pcaps = multihost.captures.enter_context(_topo(context).capture(names, multihost.tmp))


use_step_matcher("re")


@when(r'I log in from the client host and create a task (?P<commands>"[^"]*"(?: then "[^"]*")*)')
def step_create(context: Any, commands: str) -> None:
    cluster = _cluster(context)
    context.commands = [
        c.replace("$MARKER", context.marker) for c in re.findall(r'"([^"]*)"', commands)
    ]
    cluster.login()  # the password crosses the client's link
    context.task_id = cluster.create(context.commands)


use_step_matcher("parse")


@when("the task is running on one of the node hosts")
def step_running(context: Any) -> None:
    cluster = _cluster(context)
    cluster.wait(lambda: cluster.job(context.task_id)["status"] == "running", 60)
    context.node = cluster.job(context.task_id)["node"]
    assert context.node in NODE_HOSTS, context.node


@when("that node host's link is cut for half a lease and then restored")
def step_cut(context: Any) -> None:
    cluster, topo, node = _cluster(context), _topo(context), context.node
    topo.cut(node)
    try:
        time.sleep(LEASE_SECONDS / 4)
        early = _heartbeat(cluster, node)
        time.sleep(LEASE_SECONDS / 4)  # the job's sleep ends while its node is cut off
        late = _heartbeat(cluster, node)
        during = cluster.job(context.task_id)
    finally:
        topo.restore(node)
    # Really cut off: the orchestrator heard no heartbeat (1 s apart) for half the cut.
    assert early == late, (early, late)
    # Neither its result arrived nor was the job requeued: the lease still holds.
    assert (during["status"], during["attempt"], during["node"]) == ("running", 1, node), during
    context.heartbeat_during_cut = late


@then('the task completes with stdout "{stdout}" on one of the node hosts')
def step_completes_anywhere(context: Any, stdout: str) -> None:
    _completes(context, stdout.replace("$MARKER", context.marker), NODE_HOSTS)


@then('the task completes with stdout "{stdout}" on that same node host')
def step_completes_there(context: Any, stdout: str) -> None:
    _completes(context, stdout.replace("$MARKER", context.marker), (context.node,))


def _completes(context: Any, expected: str, nodes: tuple[str, ...]) -> None:
    cluster = _cluster(context)
    cluster.wait_done([context.task_id], 60)
    job = cluster.job(context.task_id)
    stdout = bytes(job["stdout"]).decode(errors="replace").strip()
    assert (job["status"], stdout) == ("completed", expected), job
    assert job["node"] in nodes, (job["node"], nodes)
    _report(context, expected)


@then("the capture shows no password, PSK or token in clear")
def step_no_secret(context: Any) -> None:
    cluster = _cluster(context)
    context.multihost.captures.close()  # tcpdumps stopped, pcaps complete
    tcp = {name: _tcp_payload(path) for name, path in context.pcaps.items()}
    # Every link carried TCP while captured (an idle node: its heartbeats, once a second).
    assert all(tcp.values()) and tcp["client"] >= MIN_CLIENT_TCP_BYTES, tcp
    assert TLS_HANDSHAKE in context.pcaps["client"].read_bytes(), "no TLS handshake seen"
    wire = b"".join(path.read_bytes() for path in context.pcaps.values())
    in_clear = {
        **cluster.wire_secrets(),
        # The task's input and output are the user's data: encrypted on every hop too.
        "the marker (command and stdout)": context.marker,
    }
    found = [what for what, value in in_clear.items() if value.encode() in wire]
    print(
        f"[netns] capture: {len(wire)} bytes on {len(tcp)} links, TCP payload {tcp}, "
        f"secrets in clear: {found or 'none'}",
        file=sys.stderr,
        flush=True,
    )
    assert found == [], found


@then("exactly one completed attempt of the task's job is stored")
def step_one_attempt(context: Any) -> None:
    cluster = _cluster(context)
    job = cluster.job(context.task_id)
    assert job["attempt"] == 1, job
    assert cluster.attempts(job["id"]) == [(1, "completed")], cluster.attempts(job["id"])
    # The node is back: heartbeats reach the orchestrator again.
    cluster.wait(lambda: _heartbeat(cluster, context.node) != context.heartbeat_during_cut, 15)
