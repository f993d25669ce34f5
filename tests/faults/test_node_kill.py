"""kill -9 the node (its whole process group, Podman service included) mid-job: the job
goes back to the queue within one lease and runs again, and at no moment do two
containers of that job run at once."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from cynode.testing import Stack
from tools.stack_client import GatewayClient

from .conftest import NODE_YAML, admin_client, fault_settings

pytestmark = [pytest.mark.fault, pytest.mark.slow, pytest.mark.podman, pytest.mark.timeout(300)]
LEASE = 3
# The lease runs from the last heartbeat (<= 1 s before the kill); the scheduler notices
# expiry on its next sweep (a quarter lease). Past this is more than "one lease".
REQUEUE_BOUND = LEASE + 1.0


class ContainerSampler(threading.Thread):
    """Counts running containers of one task every 100 ms; keeps the maximum."""

    def __init__(self, task_id: str) -> None:
        super().__init__(daemon=True)
        self.task_id = task_id
        self.max_running = 0
        self.samples = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            listed = subprocess.run(
                ["podman", "ps", "-q", "--filter", f"label=cynode.task_id={self.task_id}"],
                capture_output=True,
                text=True,
                check=False,
            )
            self.max_running = max(self.max_running, len(listed.stdout.split()))
            self.samples += 1
            self.stop_event.wait(0.1)


def _attempt(client: GatewayClient, task_id: str) -> tuple[str, int]:
    body = client.result(task_id)
    jobs = body["jobs"]
    return body["status"], max((int(job.get("attempt", 0)) for job in jobs), default=0)


def test_kill9_node_requeues_within_one_lease_never_twice(
    make_stack: list[Stack], stack_dir: Path, fault_counts: list[str]
) -> None:
    # Cold sandboxes only: the sampler finds the job's copies by their task label, which a
    # warm sandbox (made before its job, SPEC §4.10) does not carry.
    cold = NODE_YAML + "sandbox:\n  warm_containers: 0\n"
    stack = Stack(fault_settings(stack_dir, lease_seconds=LEASE, node_yaml=cold))
    make_stack.append(stack)
    stack.start()
    client = admin_client(stack)
    task_id = client.commands('echo "attempt $(date +%s)"; sleep 8; echo finished')
    client.wait_status(task_id, {"running"}, timeout=60)
    sampler = ContainerSampler(task_id)
    sampler.start()
    # Its container is up before we crash the node under it.
    deadline = time.monotonic() + 20
    while sampler.max_running == 0:
        assert time.monotonic() < deadline, "the job's container never showed up"
        time.sleep(0.1)

    stack.procs["node"].signal(9)
    stack.procs["node"].wait(10)
    killed_at = time.monotonic()
    requeued_after = None
    while time.monotonic() - killed_at < 30:
        status, attempt = _attempt(client, task_id)
        if status == "queued" or attempt >= 2:
            requeued_after = time.monotonic() - killed_at
            break
        time.sleep(0.1)
    assert requeued_after is not None, "the job was never requeued"

    # The node comes back (same slug, same state): it removes its leftover container
    # before it takes work, then runs the requeued attempt.
    stack.restart_node()
    body = client.wait_done(task_id, timeout=120)
    sampler.stop_event.set()
    sampler.join()
    client.close()
    fault_counts.append(
        f"node kill -9: requeued after {requeued_after:.1f}s (lease {LEASE}s), "
        f"max {sampler.max_running} running container(s) of the job over "
        f"{sampler.samples} samples, final status {body['status']}"
    )
    assert requeued_after <= REQUEUE_BOUND
    assert sampler.max_running == 1
    assert body["status"] == "completed", body
    assert body["stdout"].count("finished") == 1, body
    assert max(int(job["attempt"]) for job in body["jobs"]) >= 2, body
