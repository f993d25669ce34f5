"""Start-up order and /readyz, with the real control-plane client over gRPC, the real
worker API over HTTP, and a stand-in container host (Podman is tested for real in
test_podman_host.py and test_podman_e2e.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import grpc
import httpx
import pytest

from cynode.controlplane.v1 import dispatch_pb2
from cynode.jobs.v1 import job_pb2
from cynode.node.config import NodeConfig
from cynode.node.daemon import NodeDaemon
from cynode.node.job_worker import OnOutput, OnStarted, RunnerFactory
from cynode.node.readiness import STEPS, StepState
from cynode.node.runtime import userns
from cynode.node.runtime.settings import SandboxSettings
from cynode.node.runtime.warm_pool import WarmStatus
from cynode.testing import until
from tests.node.cp_server import FakeControlPlane
from tests.node.daemonkit import running_daemon
from tests.node.fakes import ScriptedRunner


class FakeHost:
    def __init__(self) -> None:
        self.images = {"localhost/cynode-sandbox"}
        self.leftovers = 2
        self.calls: list[str] = []
        self.start_error: Exception | None = None
        self.settings_seen: list[SandboxSettings] = []
        self.kept_warm: list[SandboxSettings] = []
        self.warm: list[WarmStatus] = []

    async def start(self) -> str:
        self.calls.append("start")
        if self.start_error is not None:
            raise self.start_error
        return "4.3.1"

    async def image_exists(self, image: str) -> bool:
        self.calls.append(f"image:{image}")
        return image in self.images

    async def remove_leftovers(self, node_id: str) -> int:
        self.calls.append(f"cleanup:{node_id}")
        removed, self.leftovers = self.leftovers, 0
        return removed

    def runner_factory(self, settings: Callable[[], SandboxSettings]) -> RunnerFactory:
        def make(on_output: OnOutput, on_started: OnStarted) -> ScriptedRunner:
            self.settings_seen.append(settings())
            return ScriptedRunner(on_output, on_started)

        return make

    def keep_warm(self, settings: SandboxSettings) -> None:
        self.kept_warm.append(settings)

    def warm_status(self) -> list[WarmStatus]:
        return self.warm

    async def close(self) -> None:
        self.calls.append("close")


def api_started(daemon: NodeDaemon) -> bool:
    return daemon.api is not None and daemon.api.server.started


def daemon_running(
    config: NodeConfig, host: FakeHost
) -> contextlib.AbstractAsyncContextManager[NodeDaemon]:
    """The daemon once its worker API serves (these tests watch readiness change)."""
    return running_daemon(config, host=host, until=api_started)


@pytest.fixture
def cfg(node_config: NodeConfig, control_plane: tuple[FakeControlPlane, str]) -> NodeConfig:
    return replace(node_config, control_plane_grpc=control_plane[1], worker_api_port=0)


def api_url(daemon: NodeDaemon) -> str:
    assert daemon.api is not None
    return f"http://127.0.0.1:{daemon.api.port}"


async def test_steps_run_in_spec_order_and_readyz_turns_ready_last(
    cfg: NodeConfig, control_plane: tuple[FakeControlPlane, str]
) -> None:
    plane, _ = control_plane
    host = FakeHost()
    # A cold inference job's socket directory, as a node killed mid-job leaves it.
    left = cfg.state_dir / "inference-jobs" / "jleft0000"
    left.mkdir(parents=True)
    async with daemon_running(cfg, host) as daemon:
        await until(lambda: daemon.readiness.ready)
        passed = [s for s, state in daemon.readiness.history if state is StepState.PASSED]
        assert passed[: len(STEPS)] == list(STEPS)
        assert plane.events[:4] == ["register", "get_config", "ack:applied", "connect"]
        assert host.calls[:3] == ["start", "image:localhost/cynode-sandbox", "cleanup:NODE01"]
        assert not left.exists()
        async with httpx.AsyncClient(base_url=api_url(daemon)) as http:
            ready = await http.get("/readyz")
            assert (ready.status_code, ready.text) == (200, "ready")
            assert (await http.get("/healthz")).text == "ok"
        # The orchestrator's config reached the sandbox settings the runners get.
        settings = daemon.applied.settings if daemon.applied else None
        assert settings is not None
        assert (settings.memory_mb, settings.pids, settings.default_timeout_s) == (256, 64, 600)
        assert settings.max_timeout_s == 1800  # folded in from constraints
        assert settings.node_id == "NODE01"
        # Warm pods are asked for once the node is ready, with the settings jobs get.
        assert host.kept_warm == [settings]
        report = plane.registrations[0].capability
        assert report.node.node_slug == "node-test"
        assert report.compute.cpu_cores >= 1 and report.compute.ram_mb > 0
        assert report.sandbox.max_concurrency == cfg.max_concurrency
        assert report.platform.os == "linux"
        assert report.worker_api.base_url.startswith("http://127.0.0.1:")
        assert (cfg.state_dir / "session.json").stat().st_mode & 0o777 == 0o600
        assert cfg.state_dir.stat().st_mode & 0o777 == 0o700


async def test_readyz_names_the_failed_step_and_recovers(
    cfg: NodeConfig, control_plane: tuple[FakeControlPlane, str]
) -> None:
    host = FakeHost()
    host.images.clear()
    async with daemon_running(cfg, host) as daemon:

        async def readyz() -> httpx.Response:
            async with httpx.AsyncClient(base_url=api_url(daemon)) as http:
                return await http.get("/readyz")

        for _ in range(500):
            answer = await readyz()
            if "images failed" in answer.text:
                break
            await asyncio.sleep(0.02)
        assert answer.status_code == 503
        assert "step images failed" in answer.text
        assert "run `make images`" in answer.text
        assert daemon.readiness.steps["dispatch"].state is StepState.PENDING
        host.images.add("localhost/cynode-sandbox")
        await until(lambda: daemon.readiness.ready)
        assert (await readyz()).status_code == 200


async def test_readyz_is_503_while_registration_is_refused(
    cfg: NodeConfig, control_plane: tuple[FakeControlPlane, str]
) -> None:
    bad = replace(cfg, psk="wrong-psk")
    async with daemon_running(bad, FakeHost()) as daemon:
        await until(lambda: daemon.readiness.steps["register"].state is StepState.FAILED)
        async with httpx.AsyncClient(base_url=api_url(daemon)) as http:
            answer = await http.get("/readyz")
        assert answer.status_code == 503
        assert answer.text.startswith("not ready: step register failed: UNAUTHENTICATED")
        assert "wrong-psk" not in answer.text


async def test_runtime_failure_blocks_readiness(
    cfg: NodeConfig, control_plane: tuple[FakeControlPlane, str]
) -> None:
    host = FakeHost()
    host.start_error = ConnectionRefusedError("podman service did not answer")
    async with daemon_running(cfg, host) as daemon:
        await until(lambda: daemon.readiness.steps["runtime"].state is StepState.FAILED)
        assert "podman service did not answer" in daemon.readiness.describe()
        assert not daemon.readiness.ready


async def test_no_subid_range_refuses_sandboxes_unless_userns_is_host(
    cfg: NodeConfig,
    control_plane: tuple[FakeControlPlane, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    empty = (tmp_path / "subuid", tmp_path / "subgid")
    for path in empty:
        path.write_text("someone:100000:65536\n")
    monkeypatch.setattr(userns, "SUBID_FILES", empty)
    host = FakeHost()
    async with daemon_running(cfg, host) as daemon:
        await until(lambda: daemon.readiness.steps["runtime"].state is StepState.FAILED)
        assert "sandbox.userns: host" in daemon.readiness.describe()
        assert "start" not in host.calls  # no sandbox can start: Podman is not even asked
    host = FakeHost()
    async with daemon_running(replace(cfg, sandbox_userns="host"), host) as daemon:
        await until(lambda: daemon.readiness.ready)
        assert all(s.userns == "host" for s in host.settings_seen)


async def test_rejected_config_is_acked_failed(
    cfg: NodeConfig, control_plane: tuple[FakeControlPlane, str]
) -> None:
    plane, _ = control_plane
    plane.config.sandbox.limits.memory_mb = -5
    async with daemon_running(cfg, FakeHost()) as daemon:
        await until(lambda: any(a.status == "failed" for a in plane.acks))
        ack = next(a for a in plane.acks if a.status == "failed")
        assert "memory_mb is negative" in ack.error
        assert ack.config_version == plane.config.config_version
        await until(lambda: daemon.readiness.steps["apply_config"].state is StepState.FAILED)
        # Fixing the config on the orchestrator side lets the retry pass.
        plane.config.sandbox.limits.memory_mb = 128
        await until(lambda: daemon.readiness.ready)
        assert daemon.applied is not None and daemon.applied.settings.memory_mb == 128


async def test_config_changed_refetches_applies_and_acks(
    cfg: NodeConfig, control_plane: tuple[FakeControlPlane, str]
) -> None:
    plane, _ = control_plane
    host = FakeHost()
    async with daemon_running(cfg, host) as daemon:
        await until(lambda: daemon.readiness.ready)
        session = await plane.session(0)
        plane.config.config_version = "01JCONFIG0000000000000002"
        plane.config.sandbox.limits.pids = 99
        session.send(config_changed=dispatch_pb2.ConfigChanged(config_version="x"))
        await until(lambda: len(plane.acks) == 2)
        assert plane.acks[-1].status == "applied"
        assert daemon.applied is not None and daemon.applied.settings.pids == 99
        # The warm pods are told about the new settings (pods for other ones go).
        assert host.kept_warm[-1].pids == 99
        # An image the node does not have is refused and the old settings stay.
        plane.config.config_version = "01JCONFIG0000000000000003"
        plane.config.sandbox.default_image = "localhost/absent"
        session.send(config_changed=dispatch_pb2.ConfigChanged(config_version="y"))
        await until(lambda: len(plane.acks) == 3)
        assert plane.acks[-1].status == "failed"
        assert "localhost/absent" in plane.acks[-1].error
        assert daemon.applied.config_version == "01JCONFIG0000000000000002"
        # The same version again is a no-op (no new ack).
        plane.config.config_version = "01JCONFIG0000000000000002"
        session.send(config_changed=dispatch_pb2.ConfigChanged(config_version="z"))
        session.send(
            assignment=dispatch_pb2.JobAssignment(
                spec=job_pb2.JobSpec(job_id="J1", attempt=1, commands=["true"])
            )
        )
        await session.wait_for(lambda: bool(session.of_kind("job_result")))
        assert len(plane.acks) == 3
        assert host.settings_seen[-1].pids == 99


async def test_warm_sandboxes_reach_the_report_ready_and_metrics(
    cfg: NodeConfig, control_plane: tuple[FakeControlPlane, str]
) -> None:
    plane, _ = control_plane
    host = FakeHost()
    warm = WarmStatus("sandbox", "img mem=256m", "img", 2, 1, 2, 5, 3)
    host.warm = [warm, WarmStatus("pod", "pods", "", 1, 1, 1, 0, 0)]
    async with daemon_running(cfg, host) as daemon:
        await until(lambda: daemon.readiness.ready)
        # Reported again once the pool is asked for, with its class and size.
        await until(lambda: bool(plane.capabilities))
        [entry] = plane.capabilities[-1].sandbox.warm_sandboxes
        assert (entry.sandbox_class, entry.image, entry.size, entry.ready) == (
            "img mem=256m",
            "img",
            2,
            2,
        )
        session = await plane.session(0)
        await session.wait_for(lambda: bool(session.of_kind("ready")))
        assert session.of_kind("ready")[0].warm_ready == 2
        text = daemon.metrics.render().decode()
        assert "cynode_node_warm_sandbox_hits_total 5.0" in text
        assert "cynode_node_warm_sandbox_misses_total 3.0" in text
        assert 'cynode_node_warm_sandbox_ready{sandbox_class="img mem=256m"} 1.0' in text
        # A report that fails is logged: the register-time report stands.
        assert daemon.cp is not None

        async def refused() -> None:
            raise RuntimeError("refused")

        daemon.cp.report_capability = refused  # type: ignore[method-assign]
        await daemon._report_warm()
        assert daemon.readiness.ready


async def test_metrics_and_oversized_requests(
    cfg: NodeConfig, control_plane: tuple[FakeControlPlane, str]
) -> None:
    async with daemon_running(cfg, FakeHost()) as daemon:
        await until(lambda: daemon.readiness.ready)
        async with httpx.AsyncClient(base_url=api_url(daemon), timeout=30) as http:
            metrics = await http.get("/metrics")
            assert metrics.status_code == 200
            assert "cynode_node_job_run_seconds" in metrics.text
            assert "cynode_node_container_start_seconds" in metrics.text
            big = b"x" * (10 * 1024 * 1024 + 1)
            declared = await http.post("/readyz", content=big)
            assert declared.status_code == 413
            assert declared.headers["content-type"] == "application/problem+json"
            assert declared.json()["status"] == 413
            assert declared.json()["type"] == "urn:cynode:problem:payload-too-large"

            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(11):
                    yield b"y" * (1024 * 1024)

            streamed = await http.post("/anything", content=chunks())
            assert streamed.status_code == 413
            small = await http.post("/anything", content=b"small")
            assert small.status_code == 404


async def test_stop_before_registration_succeeds_exits_cleanly(
    cfg: NodeConfig, control_plane: tuple[FakeControlPlane, str]
) -> None:
    plane, _ = control_plane
    plane.fail_register = grpc.StatusCode.UNAVAILABLE
    host = FakeHost()
    async with daemon_running(cfg, host) as daemon:
        await until(lambda: daemon.readiness.steps["register"].state is StepState.FAILED)
    assert "close" in host.calls
    assert daemon.dispatch is None
