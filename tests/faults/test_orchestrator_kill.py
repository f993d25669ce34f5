"""kill -9 the orchestrator mid-job, ten times in a row: every task still reaches the
status its commands deserve, and no result is lost (the node spools results until the
orchestrator acknowledges them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cynode.testing import Stack
from tools.stack_client import wait_gateway

from .conftest import admin_client, fault_settings

pytestmark = [pytest.mark.fault, pytest.mark.slow, pytest.mark.podman, pytest.mark.timeout(420)]
ROUNDS = 10


def test_kill9_orchestrator_mid_job_ten_times(
    make_stack: list[Stack], stack_dir: Path, fault_counts: list[str]
) -> None:
    stack = Stack(fault_settings(stack_dir))
    make_stack.append(stack)
    stack.start()
    client = admin_client(stack)
    expected: dict[str, tuple[str, str]] = {}
    for round_no in range(ROUNDS):
        ok = client.commands(f"echo begin-{round_no}; sleep 2; echo ok-{round_no}")
        bad = client.commands(f"sleep 1; echo bad-{round_no}; exit 3")
        expected[ok] = ("completed", f"ok-{round_no}")
        expected[bad] = ("failed", f"bad-{round_no}")
        client.wait_status(ok, {"running"}, timeout=60)
        stack.procs["orchestrator"].kill9()
        stack.restart_orchestrator()
        wait_gateway(client)
    right = lost = 0
    for task_id, (status, marker) in expected.items():
        body = client.wait_done(task_id, timeout=120)
        lost += marker not in body["stdout"]
        right += body["status"] == status
        assert body["status"] == status, body
        assert body["stdout"].count(marker) == 1, body
        if status == "failed":
            assert body["jobs"][-1]["exit_code"] == 3, body
    client.close()
    fault_counts.append(
        f"orchestrator kill -9 x{ROUNDS}: {right}/{len(expected)} tasks reached the right "
        f"terminal status, {lost} results lost"
    )
    assert lost == 0
