"""A job's file from the sandbox to the client's disk, against a raw loopback socket
copy of the same bytes measured in the same run (issue 18).

    .venv/bin/python -m bench.artifacts [--mb 256]

A script task writes MB of random bytes to /workspace/out/big.bin on a fresh stack
(orchestrator, node, Podman; sandbox-only). The clock starts when the job ends (its
result's `ended_at`) and stops when the file is on the client's disk, fsynced, with its
SHA-256 checked: collection on the node, the upload to the orchestrator, the blob
store, the streamed download. The yardstick sends the same bytes from one socket to
another on 127.0.0.1 into a file on the same disk, fsynced (target: CyNode >= 30 % of
its MB/s). Meanwhile the orchestrator's and the node's RSS are sampled every 20 ms;
their peak over the idle RSS before the task is printed (target < 2).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx

from bench.procstat import cpu_seconds
from cynode.testing import Stack, StackSettings
from cynork._client import GatewayClient
from cynork._download import save

TARGET_SHARE = 0.30
TARGET_RSS = 2.0
CHUNK = 1 << 20


def rss_kib(pid: int) -> int:
    """Resident set of a process and its children (the node's private Podman service
    is its own process and not counted)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler(threading.Thread):
    def __init__(self, pids: dict[str, int], every: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.every = every
        self.peak = dict.fromkeys(pids, 0)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], rss_kib(pid))
            self.done.wait(self.every)


def raw_copy(source: Path, target: Path) -> float:
    """Seconds to send `source` over a loopback TCP connection into `target`, fsynced."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    received = threading.Event()

    def receive() -> None:
        conn, _ = server.accept()
        with conn, target.open("wb") as out:
            while block := conn.recv(CHUNK):
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        received.set()

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as client, source.open("rb") as data:
        client.sendfile(data)
    received.wait()
    elapsed = time.perf_counter() - start
    server.close()
    return elapsed


def _ended_at(result: dict[str, object]) -> float:
    jobs = result["jobs"]
    assert isinstance(jobs, list) and jobs
    text = str(jobs[-1]["ended_at"]).replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp()


def cynode_copy(
    stack: Stack, size: int, target: Path, pids: dict[str, int]
) -> tuple[float, str, dict[str, float], dict[str, dict[str, float]]]:
    """Seconds from the job's end to the file on disk, the SHA-256 it printed, when
    (seconds after the job's end) the client saw each phase end, and the CPU seconds of
    each process in `pids` by then."""

    def cpu() -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in pids.items()}

    http = httpx.Client(base_url=stack.gateway_url, timeout=120)
    login = http.post(
        "/v1/auth/login", json={"handle": "admin", "password": stack.creds.admin_password}
    )
    login.raise_for_status()
    http.close()
    script = f"mkdir -p out && head -c {size} /dev/urandom > out/big.bin && sha256sum out/big.bin"
    with GatewayClient(
        stack.gateway_url, token=login.json()["access_token"], timeout=120
    ) as client:
        task_id = str(client.create_task({"commands": [script]})["task_id"])
        # As `cynork task create --result` waits: the watch, woken as the task changes,
        # its terminal event carrying the result (no poll beside the collection).
        *_, last = client.watch_task(task_id, include_result=True)
        result = last["task_result"]
        assert result["status"] == "completed", result
        ended = _ended_at(result)
        phases = {"result": time.time() - ended}
        cpus = {"result": cpu()}
        printed = str(result["stdout"]).split()[0]
        # As cynork does: the gateway holds the listing until the set is stored (woken
        # by the upload's seal), instead of a poll competing with the upload.
        listed = client.list_artifacts(task_id, wait=120)
        assert listed["complete"], listed
        phases["complete"] = time.time() - ended
        cpus["complete"] = cpu()
        [artifact] = listed["artifacts"]
        if artifact["sha256"] != printed:
            raise SystemExit(f"the listed sha256 {artifact['sha256']} is not the job's {printed}")
        # cynork's own download: read, hashed and written in a thread, fsynced,
        # checked against the listed SHA-256, renamed into place.
        save(client, task_id, artifact, target, progress=False)
    elapsed = time.time() - ended
    phases["download"] = elapsed
    cpus["download"] = cpu()
    return elapsed, printed, phases, cpus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.artifacts", description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=256, help="size of the file (MiB)")
    args = parser.parse_args(argv)
    size = args.mb * 1024 * 1024
    work = Path(tempfile.mkdtemp(prefix="cynode-bench-artifacts-"))
    stack = Stack(StackSettings.free(work / "stack", inference=False, node_slug="bench-art"))
    ok = False
    try:
        stack.start()
        pids = {name: stack.procs[name].pid for name in ("orchestrator", "node")}
        time.sleep(1.0)  # settle after start-up
        idle = {name: rss_kib(pid) for name, pid in pids.items()}
        sampler = RssSampler(pids)
        sampler.start()
        # CPU also of this process: the listing and cynork's download.
        cpu_pids = {**pids, "client": os.getpid()}
        took, _, phases, cpus = cynode_copy(stack, size, work / "via-cynode.bin", cpu_pids)
        sampler.done.set()
        sampler.join()
        raw = raw_copy(work / "via-cynode.bin", work / "via-socket.bin")
        ours, base = size / took / 1e6, size / raw / 1e6
        print(f"file: {args.mb} MiB of random bytes, load average {os.getloadavg()[0]:.2f}")
        print(f"CyNode: job end -> client disk, sha256 checked   {took:8.3f} s  {ours:8.1f} MB/s")
        print(f"raw loopback socket copy to disk, fsynced      {raw:8.3f} s  {base:8.1f} MB/s")
        steps = [
            ("job end -> result (collection)", "", "result"),
            ("result -> complete (upload)", "result", "complete"),
            ("complete -> on disk (download)", "complete", "download"),
        ]
        for label, begin, end in steps:
            took_s = phases[end] - (phases[begin] if begin else 0.0)
            used = (
                ", ".join(f"{n} {cpus[end][n] - cpus[begin][n]:.2f}" for n in cpu_pids)
                if begin
                else "in the node's log"
            )
            print(f"  {label:<44} {took_s:8.3f} s   (CPU s: {used})")
        print(
            f"artifact MB/s / raw socket copy ratio     {ours / base:.3f}  "
            f"(target >= {TARGET_SHARE})"
        )
        for name in pids:
            ratio = sampler.peak[name] / max(idle[name], 1)
            print(
                f"{name} RSS peak/idle ratio     {ratio:.2f}  "
                f"({idle[name] // 1024} MiB idle, {sampler.peak[name] // 1024} MiB peak; "
                f"target < {TARGET_RSS})"
            )
        ok = True
    finally:
        stack.stop()
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"(stack logs in {work})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
