"""A node that cannot reach the orchestrator keeps its results (in its spool, on disk)
and delivers them once the orchestrator is back; the job is not run again."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cynode.testing import Stack
from tools.stack_client import wait_gateway

from .conftest import admin_client, fault_settings

pytestmark = [pytest.mark.fault, pytest.mark.slow, pytest.mark.podman, pytest.mark.timeout(300)]


def _spooled(stack: Stack) -> list[Path]:
    spool = stack.node_state_dir / "spool"
    return [p for p in spool.rglob("*") if p.is_file()] if spool.is_dir() else []


def test_unreachable_orchestrator_results_kept_and_delivered(
    make_stack: list[Stack], stack_dir: Path, fault_counts: list[str]
) -> None:
    # A long lease: the outage outlasts the job but not the lease, as in a short
    # network cut; the result must then land exactly once.
    stack = Stack(fault_settings(stack_dir, lease_seconds=60))
    make_stack.append(stack)
    stack.start()
    client = admin_client(stack)
    task_ids = [
        client.commands(f"echo run-{n} $(date +%s%N); sleep 2; echo kept-{n}") for n in range(2)
    ]
    for task_id in task_ids:
        client.wait_status(task_id, {"running"}, timeout=60)
    stack.procs["orchestrator"].kill9()
    # The jobs finish while nobody listens: their results must sit in the spool.
    deadline = time.monotonic() + 30
    while len(_spooled(stack)) < len(task_ids):
        assert time.monotonic() < deadline, f"spool holds {_spooled(stack)}"
        time.sleep(0.2)
    held = len(_spooled(stack))
    time.sleep(2)
    stack.restart_orchestrator()
    wait_gateway(client)
    delivered = 0
    for n, task_id in enumerate(task_ids):
        body = client.wait_done(task_id, timeout=60)
        assert body["status"] == "completed", body
        assert body["stdout"].count(f"run-{n}") == 1 and f"kept-{n}" in body["stdout"], body
        assert [job["attempt"] for job in body["jobs"]] == [1], body
        delivered += 1
    # Acknowledged results leave the spool.
    deadline = time.monotonic() + 20
    while _spooled(stack):
        assert time.monotonic() < deadline, f"spool not emptied: {_spooled(stack)}"
        time.sleep(0.2)
    client.close()
    fault_counts.append(
        f"node cut off from the orchestrator: {held} result(s) held in the spool, "
        f"{delivered}/{len(task_ids)} delivered after reconnect, 0 run twice"
    )
