"""The whole node on real Podman: a private `podman system service`, the real image,
leftover cleanup, and jobs from a real gRPC control plane running in real containers."""

from __future__ import annotations

import asyncio
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from cynode.controlplane.v1 import dispatch_pb2
from cynode.jobs.v1 import job_pb2
from cynode.node.config import REPO_CONTAINERS_CONF, NodeConfig
from cynode.node.daemon import NodeDaemon
from cynode.node.podman_host import PodmanHost, private_runtime_dir
from cynode.node.readiness import StepState
from tests.node.cp_server import FakeControlPlane, StreamSession
from tests.node.daemonkit import running_daemon

pytestmark = [pytest.mark.podman, pytest.mark.slow]

IMAGE = "localhost/cynode-sandbox"


def podman(*args: str) -> subprocess.CompletedProcess[str]:
    env = {"CONTAINERS_CONF": str(REPO_CONTAINERS_CONF), "PATH": "/usr/bin:/usr/sbin:/bin"}
    return subprocess.run(["podman", *args], capture_output=True, text=True, env=env, check=False)


@pytest.fixture(scope="module", autouse=True)
def sandbox_image() -> None:
    if podman("image", "exists", IMAGE).returncode != 0:
        pytest.fail(f"{IMAGE} is missing: run `make images` before the podman tests")


def commands_job(job_id: str, *commands: str, timeout: int = 0) -> dict[str, object]:
    spec = job_pb2.JobSpec(
        job_id=job_id,
        task_id=f"T{job_id}",
        attempt=1,
        input_mode=job_pb2.INPUT_MODE_COMMANDS,
        commands=list(commands),
        timeout_seconds=timeout,
    )
    return {"assignment": dispatch_pb2.JobAssignment(spec=spec)}


async def result_of(session: StreamSession, job_id: str, within: float = 60) -> job_pb2.JobResult:
    def found() -> list[job_pb2.JobResult]:
        return [r for r in session.of_kind("job_result") if r.job_id == job_id]

    await session.wait_for(lambda: bool(found()), within=within)
    return found()[0]


@pytest.fixture
def cfg(node_config: NodeConfig, control_plane: tuple[FakeControlPlane, str]) -> NodeConfig:
    return replace(node_config, control_plane_grpc=control_plane[1], worker_api_port=0)


async def test_jobs_run_in_real_sandboxes(
    cfg: NodeConfig, control_plane: tuple[FakeControlPlane, str]
) -> None:
    plane, _ = control_plane
    # A leftover of this node from "before a crash" must be gone once the node is ready.
    leftover = podman(
        "create", "--label", "cynode.node_id=NODE01", "--name", "cynode-leftover-e2e", IMAGE, "true"
    )
    assert leftover.returncode == 0, leftover.stderr
    async with running_daemon(cfg) as daemon:
        assert daemon.readiness.ready, daemon.readiness.describe()
        assert "removed 1 leftover" in daemon.readiness.steps["cleanup"].detail
        assert podman("container", "exists", "cynode-leftover-e2e").returncode == 1
        assert daemon.readiness.steps["runtime"].detail.startswith("podman 4.")
        session = await plane.session(0)

        session.send(**commands_job("E2E1", "echo hello from $CYNODE_JOB_ID", "id -u"))
        result = await result_of(session, "E2E1")
        assert result.status == job_pb2.JOB_STATUS_COMPLETED, result
        assert result.stdout.decode().split() == ["hello", "from", "E2E1", "10000"]
        assert result.node_id == "NODE01"
        started = [s for s in session.of_kind("job_started") if s.job_id == "E2E1"]
        assert started
        chunks = b"".join(c.data for c in session.of_kind("output_chunk") if c.job_id == "E2E1")
        assert b"hello from E2E1" in chunks

        # No network: only the loopback interface exists in the sandbox.
        session.send(**commands_job("E2E2", "ls /sys/class/net"))
        result = await result_of(session, "E2E2")
        assert result.stdout.decode().split() == ["lo"]

        # The wall-clock limit stops the container; the job fails with reason timeout.
        session.send(**commands_job("E2E3", "sleep 30", timeout=1))
        result = await result_of(session, "E2E3")
        assert (result.status, result.reason) == (job_pb2.JOB_STATUS_FAILED, "timeout")

        # A cancel stops the running container.
        session.send(**commands_job("E2E4", "sleep 30"))
        await session.wait_for(
            lambda: any(s.job_id == "E2E4" for s in session.of_kind("job_started")), within=30
        )
        session.send(cancel=dispatch_pb2.CancelJob(job_id="E2E4", attempt=1, reason="user"))
        result = await result_of(session, "E2E4")
        assert result.status == job_pb2.JOB_STATUS_CANCELED
        metrics = daemon.metrics.render().decode()
        assert 'cynode_node_jobs_total{reason="timeout",status="failed"} 1.0' in metrics
        assert "cynode_node_container_start_seconds_count 4.0" in metrics
        # Every job took a warm sandbox (sandbox.warm_containers defaults to 2).
        assert "cynode_node_warm_sandbox_hits_total 4.0" in metrics
        assert "cynode_node_warm_sandbox_misses_total 0.0" in metrics
        assert 'assignment_to_process_start_seconds_count{path="warm"} 4.0' in metrics
    # The private service went away with the node.
    assert daemon.host.service is None  # type: ignore[attr-defined]


async def test_missing_image_is_reported_with_the_fix(
    cfg: NodeConfig, control_plane: tuple[FakeControlPlane, str]
) -> None:
    plane, _ = control_plane
    plane.config.sandbox.default_image = "localhost/cynode-no-such-image"
    daemon = NodeDaemon(cfg)
    task = asyncio.create_task(daemon.run())
    try:
        for _ in range(3000):
            if daemon.readiness.steps["images"].state is StepState.FAILED:
                break
            await asyncio.sleep(0.02)
        text = daemon.readiness.describe()
        assert text.startswith("not ready: step images failed")
        assert "localhost/cynode-no-such-image" in text and "make images" in text
    finally:
        daemon.stop()
        await asyncio.wait_for(task, 60)


async def test_existing_socket_is_used_and_left_running(tmp_path: Path) -> None:
    from cynode.node.runtime import PodmanService

    service = PodmanService(private_runtime_dir(tmp_path), containers_conf=REPO_CONTAINERS_CONF)
    await service.astart()
    try:
        host = PodmanHost(
            NodeConfig(node_slug="n", state_dir=tmp_path, podman_socket=str(service.socket_path))
        )
        assert (await host.start()).startswith("4.")
        assert await host.image_exists(IMAGE)
        assert not await host.image_exists("localhost/absent-image")
        assert await host.remove_leftovers("NODE-NONE") == 0
        await host.close()
        assert service.ping()
    finally:
        await service.astop()


def test_private_runtime_dir_stays_under_the_socket_limit(tmp_path: Path) -> None:
    assert private_runtime_dir(Path("/var/lib/cynode")) == Path("/var/lib/cynode/podman")
    long_dir = tmp_path / ("x" * 120)
    chosen = private_runtime_dir(long_dir)
    assert len(str(chosen / "podman.sock")) <= 100
    chosen.rmdir()
