"""kill -9 the node, then the orchestrator, while a job's artifact is being uploaded: once
the killed side is back the artifact is complete, with the SHA-256 the job printed, and
nothing corrupt was ever served (SPEC §7.11). The upload is caught mid-way by watching
the orchestrator's `.part` file grow."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pytest

from cynode.testing import Stack
from tools.stack_client import GatewayClient, wait_gateway

from .conftest import admin_client, fault_settings

pytestmark = [pytest.mark.fault, pytest.mark.slow, pytest.mark.podman, pytest.mark.timeout(420)]
SIZE = 200 * 1024 * 1024
TRIES = 3


def _partial(incoming: Path) -> int:
    """Bytes of an upload in progress (0 when none is)."""
    for part in incoming.glob("*.part"):
        try:
            size = part.stat().st_size
        except FileNotFoundError:
            continue
        if 0 < size < SIZE:
            return size
    return 0


def _listing(client: GatewayClient, task_id: str) -> dict[str, Any]:
    resp = client.request("GET", f"/v1/tasks/{task_id}/artifacts")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def _download_sha(client: GatewayClient, task_id: str, artifact_id: str) -> str:
    digest = hashlib.sha256()
    url = f"/v1/tasks/{task_id}/artifacts/{artifact_id}"
    with client.http.stream("GET", url, headers=client.headers) as resp:
        assert resp.status_code == 200
        for block in resp.iter_bytes():
            digest.update(block)
    return digest.hexdigest()


@pytest.mark.parametrize("victim", ["node", "orchestrator"])
def test_kill9_mid_upload_loses_nothing(
    victim: str, make_stack: list[Stack], stack_dir: Path, fault_counts: list[str]
) -> None:
    blobs = stack_dir / "blobs"
    stack = Stack(fault_settings(stack_dir, orchestrator_env={"CYNODE_ARTIFACTS_DIR": str(blobs)}))
    make_stack.append(stack)
    stack.start()
    client = admin_client(stack)
    incoming = blobs / "incoming"
    caught_at = 0
    task_id = ""
    for _ in range(TRIES):
        task_id = client.commands(
            f"mkdir -p out && head -c {SIZE} /dev/urandom > out/big.bin && sha256sum out/big.bin"
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not caught_at:
            caught_at = _partial(incoming)
            if not caught_at and _listing(client, task_id)["complete"]:
                break  # too quick to catch this time: try again
            time.sleep(0.005)
        if caught_at:
            break
    assert caught_at, f"never caught an upload in progress in {TRIES} tries"
    # Nothing is served while the artifact is incomplete.
    before = _listing(client, task_id)
    assert not before["complete"]
    half = before["artifacts"][0]["artifact_id"]
    assert client.request("GET", f"/v1/tasks/{task_id}/artifacts/{half}").status_code == 409

    if victim == "node":
        stack.procs["node"].signal(9)  # its whole process group, Podman service too
        stack.procs["node"].wait(10)
        stack.restart_node()
    else:
        stack.procs["orchestrator"].kill9()
        stack.restart_orchestrator()
        wait_gateway(client)
    result = client.wait_done(task_id, timeout=120)
    printed = result["stdout"].split()[0]
    deadline = time.monotonic() + 180
    while not (listed := _listing(client, task_id))["complete"]:
        assert time.monotonic() < deadline, f"artifacts never complete after the kill: {listed}"
        time.sleep(0.5)
    [artifact] = listed["artifacts"]
    assert artifact["sha256"] == printed and int(artifact["size_bytes"]) == SIZE
    served = _download_sha(client, task_id, artifact["artifact_id"])
    client.close()
    fault_counts.append(
        f"artifact upload, {victim} kill -9 at {caught_at} of {SIZE} bytes: complete after "
        f"restart, served sha256 {'matches' if served == printed else 'DIFFERS'}"
    )
    assert served == printed
    assert not list(incoming.glob("*.part"))
