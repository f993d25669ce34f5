"""The small parts: state dir, spool, config mapping, backoff, readiness, capability,
inference check, host probes, metrics."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web

from cynode.controlplane.v1 import nodes_pb2
from cynode.jobs.v1 import job_pb2
from cynode.node.apply import ConfigRejected, apply_node_config
from cynode.node.backoff import Backoff
from cynode.node.capability import (
    InferenceStatus,
    build_report,
    distro,
    gpu_present,
    ram_mb,
    sandbox_features,
    storage_free_mb,
)
from cynode.node.config import NodeConfig
from cynode.node.inference import InferenceUnavailable, check_inference
from cynode.node.metrics import NodeMetrics
from cynode.node.probe import command_output, podman_version
from cynode.node.readiness import STEPS, Readiness
from cynode.node.runtime.settings import SandboxSettings
from cynode.node.spool import ResultSpool
from cynode.node.state import NodeSessionState, StateDir, StateDirError, ensure_private_dir


def result(job_id: str, attempt: int = 1) -> job_pb2.JobResult:
    return job_pb2.JobResult(job_id=job_id, attempt=attempt, status=job_pb2.JOB_STATUS_COMPLETED)


def test_state_dir_is_private_and_session_round_trips(tmp_path: Path) -> None:
    root = tmp_path / "state"
    root.mkdir(mode=0o755)
    state = StateDir(root)
    state.prepare()
    assert root.stat().st_mode & 0o777 == 0o700
    assert state.spool_dir.stat().st_mode & 0o777 == 0o700
    assert state.load_session() is None
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    state.save_session(NodeSessionState("jwt", expires, "N1"))
    assert state.session_file.stat().st_mode & 0o777 == 0o600
    loaded = state.load_session()
    assert loaded == NodeSessionState("jwt", expires, "N1")
    assert loaded.expires_within(timedelta(days=365 * 100))
    assert not loaded.expires_within(timedelta(seconds=1), now=datetime(2029, 1, 1, tzinfo=UTC))
    state.session_file.write_text("{broken")
    assert state.load_session() is None


def test_state_dir_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "other"
    root.mkdir()
    os.chown(root, 12345, 12345)
    with pytest.raises(StateDirError, match="owned by uid 12345"):
        ensure_private_dir(root)


def test_spool_put_get_delete_and_order(tmp_path: Path) -> None:
    spool = ResultSpool(tmp_path / "spool")
    path = spool.put(result("A"))
    assert path.stat().st_mode & 0o777 == 0o600
    spool.put(result("B", 2))
    spool.put(result("../evil", 1))
    assert spool.path_for("../evil", 1).parent == spool.directory
    assert [r.job_id for r in spool.all()] == ["A", "B", "../evil"]
    assert spool.get("B", 2) == result("B", 2)
    assert spool.get("B", 3) is None
    assert spool.delete("A", 1)
    assert not spool.delete("A", 1)
    (spool.directory / "junk.1.result").write_bytes(b"\xff\xff\xff")
    assert [r.job_id for r in spool.all()] == ["B", "../evil"]
    assert not list(spool.directory.glob(".*.tmp"))


def config_message(**sandbox: object) -> nodes_pb2.GetNodeConfigResponse:
    msg = nodes_pb2.GetNodeConfigResponse(config_version="01JV")
    msg.sandbox.default_image = str(sandbox.get("image", ""))
    msg.sandbox.limits.memory_mb = int(sandbox.get("memory_mb", 0))  # type: ignore[call-overload]
    msg.sandbox.timeouts.default_seconds = int(sandbox.get("default", 0))  # type: ignore[call-overload]
    msg.sandbox.timeouts.max_seconds = int(sandbox.get("max", 0))  # type: ignore[call-overload]
    msg.constraints.max_job_timeout_seconds = int(sandbox.get("constraint", 0))  # type: ignore[call-overload]
    return msg


def test_apply_keeps_defaults_for_zero_fields_and_folds_constraints() -> None:
    base = SandboxSettings(node_id="N1")
    applied = apply_node_config(config_message(), base)
    assert applied.settings == base
    assert applied.max_request_bytes == 10 * 1024 * 1024
    applied = apply_node_config(
        config_message(image="localhost/x", memory_mb=64, default=7200, max=9000, constraint=600),
        base,
    )
    assert applied.settings.image == "localhost/x"
    assert applied.settings.memory_mb == 64
    assert applied.settings.max_timeout_s == 600
    assert applied.settings.default_timeout_s == 600
    assert applied.settings.node_id == "N1"
    assert applied.config_version == "01JV"
    with pytest.raises(ConfigRejected, match="below 6"):
        apply_node_config(config_message(memory_mb=3), base)
    with pytest.raises(ConfigRejected, match="max_seconds is negative"):
        apply_node_config(config_message(max=-1), base)


def test_backoff_grows_with_jitter_and_resets() -> None:
    backoff = Backoff(1.0, 8.0)
    delays = [backoff.next_delay() for _ in range(6)]
    ceilings = [1, 2, 4, 8, 8, 8]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    backoff.reset()
    assert backoff.next_delay() <= 1.0


def test_readiness_names_failed_before_pending() -> None:
    readiness = Readiness()
    assert readiness.describe() == "not ready: step config pending"
    readiness.passed("config")
    readiness.running("register", "dialing")
    assert readiness.describe() == "not ready: step register running: dialing"
    readiness.failed("images", "missing")
    assert readiness.describe() == "not ready: step images failed: missing"
    for step in STEPS:
        readiness.passed(step)
    assert readiness.ready and readiness.describe() == "ready"
    readiness.reset("dispatch")
    assert not readiness.ready
    with pytest.raises(KeyError):
        readiness.passed("no-such-step")


def test_capability_report_reflects_this_machine(tmp_path: Path) -> None:
    config = NodeConfig(
        node_slug="cap", labels=("x",), state_dir=tmp_path / "nope", inference_mode="existing"
    )
    report = build_report(config, podman_version="4.3.1", inference=InferenceStatus(True, ["tiny"]))
    assert report.version == 1
    assert report.compute.cpu_cores == os.cpu_count()
    assert report.compute.ram_mb > 100
    assert report.compute.storage_free_mb > 0
    assert report.container_runtime.version == "4.3.1"
    assert report.sandbox.supported and "netns" in report.sandbox.features
    assert report.inference.mode == "existing" and report.inference.existing_service
    assert list(report.inference.models) == ["tiny"]
    assert report.platform.kernel_version == os.uname().release


def test_capability_probes_on_fake_roots(tmp_path: Path) -> None:
    (tmp_path / "meminfo").write_text("MemTotal:  2048000 kB\n")
    assert ram_mb(tmp_path / "meminfo") == 2000
    assert ram_mb(tmp_path / "absent") > 0
    (tmp_path / "os-release").write_text('ID=debian\nVERSION_ID="12"\n')
    assert distro(tmp_path / "os-release") == "debian 12"
    (tmp_path / "os-release").write_text('PRETTY_NAME="Something"\n')
    assert distro(tmp_path / "os-release") == "Something"
    assert distro(tmp_path / "absent") == ""
    (tmp_path / "sys/fs/cgroup/memory").mkdir(parents=True)
    assert "cgroups-v1" in sandbox_features(tmp_path)
    (tmp_path / "sys/fs/cgroup/cgroup.controllers").write_text("")
    assert "cgroups-v2" in sandbox_features(tmp_path)
    assert not gpu_present(tmp_path)
    (tmp_path / "nvidia0").write_text("")
    assert gpu_present(tmp_path)
    assert storage_free_mb(tmp_path / "a" / "b") > 0


@pytest.fixture
async def ollama_stand_in() -> AsyncIterator[tuple[str, dict[str, object]]]:
    state: dict[str, object] = {"status": 200, "body": {"models": [{"name": "smollm2:135m"}]}}

    async def tags(_: web.Request) -> web.Response:
        body = state["body"]
        if isinstance(body, str):
            return web.Response(text=body, status=int(str(state["status"])))
        return web.json_response(body, status=int(str(state["status"])))

    app = web.Application()
    app.router.add_get("/api/tags", tags)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", state
    await runner.cleanup()


async def test_inference_check_against_an_http_server(
    ollama_stand_in: tuple[str, dict[str, object]],
) -> None:
    url, state = ollama_stand_in
    assert await check_inference("none", url) == InferenceStatus(False, [])
    assert await check_inference("existing", url) == InferenceStatus(True, ["smollm2:135m"])
    state["status"] = 500
    with pytest.raises(InferenceUnavailable, match="answered 500"):
        await check_inference("existing", url)
    state["status"], state["body"] = 200, "not json"
    with pytest.raises(InferenceUnavailable, match="Ollama's JSON"):
        await check_inference("existing", url)
    with pytest.raises(InferenceUnavailable, match="unreachable"):
        await check_inference("existing", "http://127.0.0.1:1")
    with pytest.raises(InferenceUnavailable, match="Ollama's JSON"):
        await check_inference("container", url)  # the node's container is checked alike
    with pytest.raises(InferenceUnavailable, match="not supported"):
        await check_inference("cloud", url)


async def test_probes_run_real_commands() -> None:
    assert (await podman_version()).startswith("4.")
    assert await podman_version("no-such-podman") == ""
    assert await command_output("no-such-binary") == (127, "no-such-binary: not found")
    code, out = await command_output("sleep", "5", within=0.2)
    assert code == 124 and "timed out" in out


def test_metrics_count_results_by_status() -> None:
    metrics = NodeMetrics()
    done = result("A")
    done.started_at.FromSeconds(100)
    done.ended_at.FromSeconds(103)
    metrics.record_result(done)
    metrics.record_result(
        job_pb2.JobResult(job_id="B", status=job_pb2.JOB_STATUS_FAILED, reason="timeout")
    )
    text = metrics.render().decode()
    assert 'cynode_node_jobs_total{reason="",status="completed"} 1.0' in text
    assert 'cynode_node_jobs_total{reason="timeout",status="failed"} 1.0' in text
    assert "cynode_node_job_run_seconds_sum 3.0" in text
