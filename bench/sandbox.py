"""A trivial task end to end (REST create → result) against a bare `podman run`.

    .venv/bin/python -m bench.sandbox [--runs 20] [--raw-only]
        [--gateway-url URL --admin-password PW]   # an existing stack
                                                  # (default: start orchestrator + node)

Both halves run the same image with the same command (`true`) in the same run, and
the ratio of medians is printed (target <= 1.3). The raw half is what Podman alone
costs: `podman run --rm --network none <image> true`. A third row times the whole
`cynork task create --command true --result` process (start-up, create, the watch
stream, the result) against the same raw run (issue 16's target <= 0.5 needs warm
sandboxes; it is printed, not enforced).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from cynode.testing import BIN, Node, Orchestrator

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "localhost/cynode-sandbox"
TARGET_RATIO = 1.3
CYNORK_TARGET_RATIO = 0.5
TERMINAL = ("completed", "failed", "canceled")


def podman_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(ROOT / "deploy" / "podman" / "containers.conf"))
    return env


def raw_run() -> float:
    """One bare `podman run --rm --network none` of the sandbox image; its wall time in
    seconds (the yardstick the sandbox and inference benches divide by)."""
    argv = ["podman", "run", "--rm", "--network", "none", IMAGE, "true"]
    start = time.perf_counter()
    subprocess.run(argv, check=True, env=podman_env(), capture_output=True)
    return time.perf_counter() - start


def raw_runs(runs: int) -> list[float]:
    raw_run()  # warm-up
    return [raw_run() for _ in range(runs)]


def wait_terminal(http: httpx.Client, task_id: str) -> None:
    """Until GET /v1/tasks/{id}/watch (NDJSON) sends its terminal event."""
    with http.stream("GET", f"/v1/tasks/{task_id}/watch") as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.strip():
                continue
            event = json.loads(line)
            event = event.get("result", event) if isinstance(event, dict) else event
            if isinstance(event, dict) and event.get("error"):
                raise RuntimeError(f"task {task_id} watch failed: {event['error']}")
            if isinstance(event, dict) and event.get("terminal"):
                return
    raise RuntimeError(f"task {task_id}: the watch stream ended before the task did")


def task_runs(gateway_url: str, password: str, runs: int) -> list[float]:
    with httpx.Client(base_url=gateway_url, timeout=30) as http:
        login = http.post("/v1/auth/login", json={"handle": "admin", "password": password})
        login.raise_for_status()
        http.headers["Authorization"] = f"Bearer {login.json()['access_token']}"

        def one() -> float:
            start = time.perf_counter()
            created = http.post("/v1/tasks", json={"input_mode": "commands", "commands": ["true"]})
            created.raise_for_status()
            task_id = created.json()["task_id"]
            # The watch stream says when the task ends, so no poll interval is measured.
            wait_terminal(http, task_id)
            result = http.get(f"/v1/tasks/{task_id}/result").json()
            elapsed = time.perf_counter() - start
            if result["status"] != "completed":
                raise RuntimeError(f"task {task_id} ended {result['status']}: {result}")
            return elapsed

        one()  # warm-up
        return [one() for _ in range(runs)]


def cynork_runs(gateway_url: str, password: str, runs: int) -> list[float]:
    """Wall time of whole `cynork task create --command true --result` processes."""
    with httpx.Client(base_url=gateway_url, timeout=30) as http:
        login = http.post("/v1/auth/login", json={"handle": "admin", "password": password})
        login.raise_for_status()
        token = login.json()["access_token"]
    with tempfile.TemporaryDirectory(prefix="bench-cynork-") as home:
        env = {
            **os.environ,
            "XDG_CONFIG_HOME": home,
            "CYNORK_GATEWAY_URL": gateway_url,
            "CYNORK_TOKEN": token,
        }
        argv = [str(BIN / "cynork"), "task", "create", "--command", "true", "--result"]

        def one() -> float:
            start = time.perf_counter()
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
            elapsed = time.perf_counter() - start
            if done.returncode != 0 or "status=completed" not in done.stdout:
                raise RuntimeError(f"cynork exited {done.returncode}: {done.stdout}{done.stderr}")
            return elapsed

        one()  # warm-up
        return [one() for _ in range(runs)]


@contextlib.contextmanager
def stack() -> Iterator[tuple[str, str]]:
    """orchestrator serve (SQLite) + cynode-node run, on free ports in a temp dir."""
    work = Path(tempfile.mkdtemp(prefix="cynode-bench-"))
    password, psk = secrets.token_urlsafe(16), secrets.token_urlsafe(24)
    orch = Orchestrator(
        work / "orchestrator",
        password,
        psk,
        settings={"CYNODE_REQUIRE_INFERENCE": "false"},
        ready_timeout=120.0,
    )
    node = Node(
        work / "node",
        psk,
        control_url=orch.control_url,
        control_grpc=orch.control_grpc,
        slug="bench-node",
        ready_timeout=120.0,
    )
    try:
        orch.start()
        node.start()
        yield orch.gateway_url, password
    finally:
        node.stop()
        orch.stop()
        print(f"(stack logs in {work})", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--raw-only", action="store_true")
    parser.add_argument("--gateway-url", default="")
    parser.add_argument("--admin-password", default=os.environ.get("ADMIN_PASSWORD", ""))
    args = parser.parse_args(argv)
    if args.runs < 20:
        parser.error("--runs must be at least 20 for a meaningful median")
    raw = statistics.median(raw_runs(args.runs))
    print(f"{'sandbox: raw podman run --rm --network none':48} median {raw * 1000:8.1f} ms")
    if args.raw_only:
        return 0
    with contextlib.ExitStack() as stop:
        if args.gateway_url:
            gateway, password = args.gateway_url, args.admin_password
        else:
            gateway, password = stop.enter_context(stack())
        times = task_runs(gateway, password, args.runs)
        cli_times = cynork_runs(gateway, password, args.runs)
    task = statistics.median(times)
    ratio = task / raw
    verdict = "ok" if ratio <= TARGET_RATIO else f"over target {TARGET_RATIO}"
    print(f"{'sandbox: cynode task create -> result':48} median {task * 1000:8.1f} ms")
    cli = statistics.median(cli_times)
    print(f"{'sandbox: cynork create --result, whole process':48} median {cli * 1000:8.1f} ms")
    print(f"{'sandbox: ratio task / raw':48} {ratio:8.2f}   ({verdict})")
    cli_ratio = cli / raw
    cli_verdict = "ok" if cli_ratio <= CYNORK_TARGET_RATIO else f"over {CYNORK_TARGET_RATIO}"
    print(f"{'sandbox: ratio cynork --result / raw':48} {cli_ratio:8.2f}   ({cli_verdict})")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
