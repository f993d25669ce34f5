"""Partitions and degraded links between real hosts (network namespaces): TLS and mTLS
everywhere, short and long cuts, a flapping link, an orchestrator restart, refused
handshakes, and a capture with no secret in clear. Each scenario prints jobs created,
results stored, duplicates and lost."""

from __future__ import annotations

import secrets
import threading
import time
from pathlib import Path

import pytest

from tests.netns.cluster import LEASE_SECONDS, Cluster, Counts
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
    with topo.capture(["node-a", "node-b", "client"], tmp_path) as pcaps:
        cluster.login()  # the password crosses the client's link
        task = cluster.create([f"echo {marker}"])
        cluster.wait_done([task], 60)
    report(capsys, "tls round trip", cluster.counts([task], lambda _: marker))
    wire = b"".join(path.read_bytes() for path in pcaps.values())
    assert len(wire) > 2000, "the capture saw no traffic"
    secrets_in_clear = {**cluster.wire_secrets(), "prompt text": marker}
    found = [what for what, value in secrets_in_clear.items() if value.encode() in wire]
    with capsys.disabled():
        print(f"[netns] capture: {len(wire)} bytes on 3 links, secrets in clear: {found or 'none'}")
    assert found == []


def _running_on(cluster: Cluster, task: str, timeout: float = 60) -> str:
    cluster.wait(lambda: cluster.job(task)["status"] == "running", timeout)
    node = cluster.job(task)["node"]
    assert node in ("node-a", "node-b")
    return str(node)


def test_cut_shorter_than_a_lease_keeps_the_job_and_delivers_its_result_once(
    cluster: Cluster, topo: Topology, capsys: pytest.CaptureFixture[str]
) -> None:
    task = echo_task(cluster, "short-cut", sleep=1.5)
    node = _running_on(cluster, task)
    topo.cut(node)
    try:
        time.sleep(LEASE_SECONDS / 2)  # the job ends while its node is cut off
    finally:
        topo.restore(node)
    cluster.wait_done([task], 60)
    job = cluster.job(task)
    assert (job["attempt"], job["node"]) == (1, node)
    assert cluster.attempts(job["id"]) == [(1, "completed")]
    report(capsys, "cut < lease", cluster.counts([task], lambda _: "short-cut"))


def test_cut_longer_than_a_lease_requeues_on_the_other_node_and_stops_the_first_copy(
    cluster: Cluster, topo: Topology, capsys: pytest.CaptureFixture[str]
) -> None:
    task = echo_task(cluster, "long-cut", sleep=16)
    first = _running_on(cluster, task)
    other = "node-b" if first == "node-a" else "node-a"
    topo.cut(first)
    try:
        # Lease runs out, the job is requeued and started on the other node.
        cluster.wait(
            lambda: cluster.job(task)["attempt"] >= 2 and cluster.job(task)["node"] == other,
            LEASE_SECONDS * 4,
        )
    finally:
        topo.restore(first)
    # The first node learns it lost the lease and stops its copy (well before 16 s).
    job_id = cluster.job(task)["id"]
    cluster.wait(
        lambda: (
            "superseded" in cluster.procs[first].text()
            or (1, "canceled") in cluster.attempts(job_id)
        ),
        20,
    )
    cluster.wait_done([task], 60)
    job = cluster.job(task)
    assert job["node"] == other and job["attempt"] >= 2
    attempts = dict(cluster.attempts(job_id))
    assert attempts.get(1) != "completed", attempts
    report(
        capsys, "cut > lease", cluster.counts([task], lambda _: "long-cut"), f" attempts={attempts}"
    )


def test_a_flapping_link_under_a_steady_stream_loses_and_duplicates_nothing(
    cluster: Cluster, topo: Topology, capsys: pytest.CaptureFixture[str]
) -> None:
    stop = threading.Event()

    def flap() -> None:
        while not stop.is_set():
            topo.cut("node-a")
            stop.wait(1.0)
            topo.restore("node-a")
            stop.wait(2.0)

    flapper = threading.Thread(target=flap, daemon=True)
    flapper.start()
    tasks: list[str] = []
    try:
        for i in range(30):
            tasks.append(echo_task(cluster, f"flap-{i}"))
            time.sleep(0.3)
        cluster.wait_done(tasks, 120)
    finally:
        stop.set()
        flapper.join()
        topo.restore("node-a")
    tags = {t: f"flap-{i}" for i, t in enumerate(tasks)}
    latencies = cluster.dispatch_latencies(tasks)
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    nodes = sorted({str(cluster.job(t)["node"]) for t in tasks})
    report(
        capsys,
        "flapping link",
        cluster.counts(tasks, tags.__getitem__),
        f" dispatch p50={p50:.2f}s p99={p99:.2f}s nodes={nodes}",
    )


def test_orchestrator_restart_while_nodes_run_loses_no_result(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    tasks = [echo_task(cluster, f"restart-{i}", sleep=3) for i in range(6)]
    cluster.wait(lambda: any(cluster.job(t)["status"] == "running" for t in tasks), 60)
    cluster.procs["orchestrator"].stop()
    cluster.start_orchestrator()
    cluster.login()
    cluster.wait_done(tasks, 120)
    # Both nodes are connected again: new work still reaches each of them.
    for proc in ("node-a", "node-b"):
        assert cluster.procs[proc].alive()
    tags = {t: f"restart-{i}" for i, t in enumerate(tasks)}
    counts = cluster.counts(tasks, tags.__getitem__)
    if counts.duplicates:  # which copies ran, where, when: the orchestrator log says why
        attempts = {t: cluster.attempt_rows(cluster.job(t)["id"]) for t in tasks}
        with capsys.disabled():
            print(f"\n{attempts}\n{cluster.procs['orchestrator'].text()[-6000:]}")
    report(capsys, "orchestrator restart", counts)
    after = [echo_task(cluster, f"after-{i}") for i in range(4)]
    cluster.wait_done(after, 60)
    seen = {cluster.job(t)["node"] for t in [*tasks, *after]}
    assert seen == {"node-a", "node-b"}, seen


@pytest.mark.parametrize(
    "case", ["wrong CA", "foreign client cert", "expired client cert", "plain text"]
)
def test_a_node_with_bad_credentials_is_refused_with_a_log_line_on_both_sides(
    cluster: Cluster, case: str, tmp_path: Path
) -> None:
    from datetime import UTC, datetime, timedelta

    from cynode.orchestrator.certs import issue, load_ca, make_ca

    changes: dict[str, object] = {
        "node__slug": "rogue",
        "state_dir": str(tmp_path / "rogue"),
        "worker_api": {"host": "127.0.0.1", "port": 0},
    }
    orch_log_before = len(cluster.procs["orchestrator"].text())
    grpc_target = f"{cluster.topo.hosts['orch'].address}:12083"
    if case == "wrong CA":
        (tmp_path / "other.pem").write_bytes(make_ca("other").cert_pem())
        changes["orchestrator"] = {
            "url": f"https://{grpc_target.replace('12083', '12082')}",
            "grpc": grpc_target,
            "ca_file": str(tmp_path / "other.pem"),
            "client_cert": str(cluster.certs / "node-node-b.pem"),
            "client_key": str(cluster.certs / "node-node-b.key"),
        }
        # The node refuses the server here; gRPC logs nothing server-side for the
        # client's alert, so only the node's line is checked.
        expect_server = ""
    elif case in ("foreign client cert", "expired client cert"):
        if case == "foreign client cert":
            pair = issue(make_ca("rogue CA"), "rogue", ["rogue"], client=True)
        else:
            pair = issue(
                load_ca(cluster.certs),
                "rogue",
                ["rogue"],
                client=True,
                days=1,
                not_before=datetime.now(UTC) - timedelta(days=3),
            )
        pair.write(tmp_path / "c.pem", tmp_path / "c.key")
        changes["orchestrator"] = {
            "url": f"https://{grpc_target.replace('12083', '12082')}",
            "grpc": grpc_target,
            "ca_file": str(cluster.ca),
            "client_cert": str(tmp_path / "c.pem"),
            "client_key": str(tmp_path / "c.key"),
        }
        expect_server = "expired" if case == "expired client cert" else "unable to get local issuer"
    else:
        changes["orchestrator"] = {
            "url": f"http://{grpc_target.replace('12083', '12082')}",
            "grpc": grpc_target,
        }
        changes["insecure"] = True
        expect_server = "Handshake failed"
    rogue = cluster.start_node(
        "node-b", name=f"rogue-{case.replace(' ', '-')}", wait=False, **changes
    )
    try:
        cluster.wait(lambda: "start-up step register failed" in rogue.text(), 30, rogue)
        if expect_server:
            cluster.wait(
                lambda: expect_server in cluster.procs["orchestrator"].text()[orch_log_before:],
                15,
            )
    finally:
        rogue.stop()
    node_line = next(line for line in rogue.text().splitlines() if "register failed" in line)
    with_hint = "TLS" in node_line
    assert with_hint, node_line
    assert cluster.psk not in rogue.text()
    assert cluster.query("SELECT count(*) FROM nodes WHERE slug = 'rogue'") == [(0,)]
