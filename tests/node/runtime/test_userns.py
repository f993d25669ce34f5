"""Every kind of sandbox in a user namespace of its own (SPEC §4.4), on real Podman.

A cold sandbox, a warm one and a warm inference pod (sandbox and proxy sidecar) each run a
job that prints its /proc/self/uid_map, then waits; meanwhile the test reads, on the
host, the uid of every process of the job's containers (/proc/<pid>/status and Podman's
`top huser`): a high host uid inside the mapped range, never 0 or a normal user's.
Afterwards nothing is left mounted (shm, the bounded workspace) and no loop device.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import subprocess
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from podman import PodmanClient

from cynode.jobs.v1 import job_pb2
from cynode.node.inference.relay import InferenceRelay
from cynode.node.runtime import JobRunner, SandboxSettings, ops
from cynode.node.runtime.labels import LABEL_NODE_ID
from cynode.node.runtime.sandbox import SANDBOX_UID
from cynode.node.runtime.settings import InferencePodSettings
from cynode.node.runtime.userns import RANGE_SIZE, missing_ranges, mount_points
from cynode.node.runtime.warm_pool import WarmPodPool
from cynode.node.runtime.workspace_image import tools_present
from cynode.testing.waiting import until
from tests.node.runtime.conftest import RunnerMaker, make_spec
from tests.node.runtime.inference_support import PROXY_IMAGE, ScriptedOllama, hosted_relay, serve

pytestmark = [pytest.mark.podman]

COMPLETED = job_pb2.JOB_STATUS_COMPLETED
# Waits (up to a minute, for a loaded machine) until the test drops /workspace/go.
JOB = (
    "cat /proc/self/uid_map; id -u; touch /workspace/mine && echo ws-writable; "
    "mkdir -p /workspace/out && echo kept > /workspace/out/r.txt; "
    "i=0; while [ ! -e /workspace/go ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; "
    "echo released"
)


@pytest.fixture(autouse=True)
def subid_range() -> None:
    assert missing_ranges() == [], "no `containers` range in /etc/subuid, /etc/subgid"


@pytest.fixture
def bounded(settings: SandboxSettings, tmp_path: Path) -> SandboxSettings:
    assert tools_present() == [], "e2fsprogs is needed (apt-get install e2fsprogs)"
    images, spool = tmp_path / "workspaces", tmp_path / "artifacts"
    images.mkdir()
    spool.mkdir()
    return dataclasses.replace(
        settings, workspace_mb=16, workspace_dir=str(images), artifact_dir=str(spool)
    )


# Ids of the containers a test looked at: none may leave a mount (its shm) behind.
SEEN_IDS: list[str] = []


def host_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])  # the real uid
    raise AssertionError(f"no Uid line for pid {pid}")


def mapped_range(stdout: str) -> tuple[int, int, int]:
    inside, outside, count = (int(v) for v in stdout.splitlines()[0].split())
    return inside, outside, count


async def running_containers(client: PodmanClient, node_id: str) -> list[dict[str, Any]]:
    def listed() -> list[dict[str, Any]]:
        found = client.containers.list(filters={"label": f"{LABEL_NODE_ID}={node_id}"})
        return [c.attrs for c in found if c.attrs.get("State") == "running"]

    return await asyncio.to_thread(listed)


async def host_view(client: PodmanClient, node_id: str, roles: set[str]) -> dict[str, list[int]]:
    """role -> the host uids of that container's processes, read while the job waits
    (the containers' ids go to SEEN_IDS)."""
    views: dict[str, list[int]] = {}

    async def seen() -> bool:
        for attrs in await running_containers(client, node_id):
            role = str((attrs.get("Labels") or {}).get("cynode.role", ""))
            if role in roles and role not in views:
                views[role] = await asyncio.to_thread(_uids, client, str(attrs["Id"]))
                SEEN_IDS.append(str(attrs["Id"]))
        return set(views) == roles

    await until(seen, timeout=60, what=f"running containers {roles}")
    return views


def _uids(client: PodmanClient, container_id: str) -> list[int]:
    pid = int(ops.container_state(client, container_id)["Pid"])
    top = client.api.get(f"/containers/{container_id}/top", params={"ps_args": "huser,args"})
    top.raise_for_status()
    # The job's processes as Podman sees them on the host, besides PID 1's own status
    # ("?": a `sleep` of the job's loop that ended while Podman read it).
    return [host_uid(pid)] + [int(p[0]) for p in top.json()["Processes"] if p[0] != "?"]


async def release(client: PodmanClient, node_id: str) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.addfile(tarfile.TarInfo("go"), io.BytesIO(b""))
    for attrs in await running_containers(client, node_id):
        labels = attrs.get("Labels") or {}
        if labels.get("cynode.role") == "sandbox":
            await asyncio.to_thread(
                ops.put_archive, client, str(attrs["Id"]), "/workspace", buf.getvalue()
            )


async def run_and_look(
    runner: JobRunner, client: PodmanClient, node_id: str, roles: set[str]
) -> tuple[job_pb2.JobResult, dict[str, list[int]]]:
    spec = make_spec(script=JOB)
    JOB_IDS.append(spec.job_id)
    job = asyncio.create_task(runner.run(spec))
    try:
        views = await host_view(client, node_id, roles)
        await release(client, node_id)
        return await asyncio.wait_for(job, 120), views
    finally:
        if not job.done():
            job.cancel()


def check_namespaced(result: job_pb2.JobResult, views: dict[str, list[int]]) -> None:
    assert result.status == COMPLETED, result
    out = result.stdout.decode()
    inside, outside, count = mapped_range(out)
    # Not the host's identity map `0 0 4294967295`: 65536 ids far above any real user.
    assert (inside, count) == (0, RANGE_SIZE), out
    assert outside >= 65536, out
    assert out.splitlines()[1:] == [str(SANDBOX_UID), "ws-writable", "released"], out
    sandbox_uids = views["sandbox"]
    assert sandbox_uids and set(sandbox_uids) == {outside + SANDBOX_UID}, views
    for uids in views.values():
        assert all(uid >= 65536 for uid in uids), views


def leftover_mounts() -> list[str]:
    """Mounts of the containers seen (shm) or of any job's workspace volume."""
    seen, SEEN_IDS[:] = list(SEEN_IDS), []
    return [m for m in mount_points() if any(cid in m for cid in seen) or _ours(m)]


def _ours(mount: str) -> bool:
    return "/volumes/cynode-ws-" in mount and any(j in mount for j in JOB_IDS)


JOB_IDS: list[str] = []


def loops(image_dir: str) -> list[str]:
    """Loop devices still holding a workspace image the node has removed already (a
    warm pool's next sandbox holds its own, live image)."""
    listed = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=False)
    held = [line for line in listed.stdout.splitlines() if image_dir in line]
    return [line for line in held if "(deleted)" in line or not _image_exists(line)]


def _image_exists(line: str) -> bool:
    return Path(line.rsplit("(", 1)[-1].rstrip(")")).exists()


@pytest.mark.usefixtures("no_leftovers")
async def test_cold_and_warm_sandboxes_run_in_their_own_user_namespace(
    make_runner: RunnerMaker,
    bounded: SandboxSettings,
    podman_client: PodmanClient,
    node_id: str,
) -> None:
    runner = await make_runner(bounded)
    result, views = await run_and_look(runner, podman_client, node_id, {"sandbox"})
    check_namespaced(result, views)
    # The workspace was writable inside the namespace and its out/ was still collected.
    assert [a.name for a in result.artifacts.artifacts] == ["r.txt"], result.artifacts
    # The kernel lets a loop device go a moment after its last mount.
    await until(lambda: loops(bounded.workspace_dir) == [], timeout=30, what="loops released")
    assert leftover_mounts() == []


@pytest.mark.usefixtures("no_leftovers")
async def test_host_mode_keeps_the_hosts_ids(
    bounded: SandboxSettings, podman_client: PodmanClient, node_id: str
) -> None:
    settings = dataclasses.replace(bounded, userns="host")
    result = await JobRunner(podman_client, settings).run(
        make_spec(commands=["cat /proc/self/uid_map"])
    )
    assert result.status == COMPLETED, result
    assert mapped_range(result.stdout.decode()) == (0, 0, 4294967295)


@pytest.fixture
async def relay(tmp_path: Path, podman_client: PodmanClient) -> AsyncIterator[InferenceRelay]:
    upstream = ScriptedOllama()
    async for url in serve(upstream.app()):
        async with hosted_relay(tmp_path / "relay", url, podman_client) as made:
            yield made


@pytest.mark.usefixtures("clean_node")
async def test_an_inference_pod_and_its_members_share_one_user_namespace(
    bounded: SandboxSettings,
    podman_client: PodmanClient,
    node_id: str,
    relay: InferenceRelay,
) -> None:
    pod = InferencePodSettings(
        relay_socket=str(relay.socket_path), proxy_image=PROXY_IMAGE, ready_timeout_s=60
    )
    settings = dataclasses.replace(bounded, inference=pod)
    # A warm pod (a cold job runs without one, in a sandbox like any other's).
    pool = WarmPodPool(podman_client, size=1)
    pool.fill(settings)
    await pool.wait_filled()
    assert pool.ready_count == 1
    runner = JobRunner(podman_client, settings, warm_pods=pool)
    spec = make_spec(
        use_inference=True,
        script=JOB.replace(
            "echo released",
            "echo released; test -S /run/cynode-inference/proxy.sock && echo proxy",
        ),
    )
    JOB_IDS.append(spec.job_id)
    job = asyncio.create_task(runner.run(spec))
    try:
        views = await host_view(podman_client, node_id, {"sandbox", "proxy"})
        await release(podman_client, node_id)
        result = await asyncio.wait_for(job, 120)
    finally:
        if not job.done():
            job.cancel()
        await pool.close()
    assert pool.taken == 1
    assert result.stdout.decode().splitlines()[-1] == "proxy", result
    result.stdout = result.stdout.decode().rsplit("proxy", 1)[0].encode()
    check_namespaced(result, views)
    # The sidecar is in the same namespace: its user is the same high host uid.
    assert set(views["proxy"]) == set(views["sandbox"]), views
    # The kernel lets a loop device go a moment after its last mount.
    await until(lambda: loops(bounded.workspace_dir) == [], timeout=30, what="loops released")
    assert leftover_mounts() == []
