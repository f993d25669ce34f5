"""Sandbox limits an operator sets on the orchestrator reach the job's container: a
real orchestrator process (memory through `CYNODE_SANDBOX_MEMORY_MB`, pids and cpus
through its YAML file, named by `CYNODE_ORCHESTRATOR_CONFIG`) issues them in the node
config, a real node applies them, and a job reads its own cgroup limits."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cynode.testing import Stack, StackSettings, running_stack
from tools.stack_client import GatewayClient

pytestmark = [pytest.mark.podman, pytest.mark.slow, pytest.mark.timeout(300)]
IMAGE = "localhost/cynode-sandbox"
# Off the defaults (1024 MiB, 256 pids, 1 CPU), so the defaults cannot pass the test.
MEMORY_MB = 96
PIDS = 48
CPUS = 0.5
# cgroups v2 first, then v1 (this host: runc with cgroupfs); one value per line.
READ_LIMITS = (
    "cat /sys/fs/cgroup/memory.max 2>/dev/null"
    " || cat /sys/fs/cgroup/memory/memory.limit_in_bytes;"
    " cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max;"
    " cat /sys/fs/cgroup/cpu.max 2>/dev/null"
    " || echo $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us)"
    " $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)"
)


@pytest.fixture
def stack() -> Iterator[Stack]:
    if subprocess.run(["podman", "image", "exists", IMAGE], check=False).returncode != 0:
        pytest.fail(f"{IMAGE} is missing: run `make images`")
    path = Path(tempfile.mkdtemp(prefix="cynode-limits-"))
    config = path / "orchestrator.yaml"
    config.write_text(f"sandbox:\n  pids: {PIDS}\n  cpus: {CPUS}\n")
    settings = StackSettings.free(
        path,
        inference=False,
        node_slug=f"limits-{path.name[-8:]}",
        orchestrator_env={
            "CYNODE_SANDBOX_MEMORY_MB": str(MEMORY_MB),
            "CYNODE_ORCHESTRATOR_CONFIG": str(config),
        },
    )
    with running_stack(settings) as stack:
        yield stack


def test_limits_from_env_and_config_file_reach_the_container(stack: Stack) -> None:
    client = GatewayClient(stack.gateway_url)
    client.login("admin", stack.creds.admin_password)
    task_id = client.commands(READ_LIMITS)
    body = client.wait_done(task_id, timeout=120)
    assert body["status"] == "completed", body
    memory, pids, cpu = body["stdout"].strip().splitlines()
    assert int(memory) == MEMORY_MB * 1024 * 1024
    assert int(pids) == PIDS
    quota, period = (int(part) for part in cpu.split())
    assert quota / period == pytest.approx(CPUS)
