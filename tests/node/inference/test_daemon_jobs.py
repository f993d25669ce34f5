"""Jobs that need inference through the whole daemon, on real Podman with the real dev
model; and a daemon whose proxy image is missing, which must not say it is ready."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from cynode.controlplane.v1 import dispatch_pb2
from cynode.jobs.v1 import job_pb2
from cynode.node.config import NodeConfig
from cynode.node.daemon import NodeDaemon
from cynode.node.devinference import DevInferenceHandle, start_dev_inference
from tests.fixtures.podman import PROXY_IMAGE
from tests.node.cp_server import FakeControlPlane, StreamSession
from tests.node.daemonkit import running_daemon
from tests.node.inference.conftest import podman

MODEL = "smollm2:135m"


@pytest.fixture(scope="module")
async def dev_model() -> AsyncIterator[DevInferenceHandle]:
    handle = await start_dev_inference("127.0.0.1", 0, n_ctx=1024, default_num_predict=12)
    yield handle
    await handle.close()


async def result_of(session: StreamSession, job_id: str, within: float = 120) -> job_pb2.JobResult:
    def found() -> list[job_pb2.JobResult]:
        return [r for r in session.of_kind("job_result") if r.job_id == job_id]

    await session.wait_for(lambda: bool(found()), within=within)
    return found()[0]


def assignment(**fields: object) -> dict[str, object]:
    spec = job_pb2.JobSpec(attempt=1, **fields)  # type: ignore[arg-type]
    return {"assignment": dispatch_pb2.JobAssignment(spec=spec)}


@pytest.mark.podman
@pytest.mark.model
@pytest.mark.slow
async def test_daemon_runs_inference_jobs_against_the_real_model(
    node_config: NodeConfig,
    control_plane: tuple[FakeControlPlane, str],
    dev_model: DevInferenceHandle,
) -> None:
    plane, target = control_plane
    plane.config.inference.default_model = MODEL
    config = replace(
        node_config,
        control_plane_grpc=target,
        worker_api_port=0,
        inference_mode="existing",
        inference_url=dev_model.url,
        inference_proxy_image=PROXY_IMAGE,
    )
    async with running_daemon(config) as daemon:
        assert daemon.readiness.ready, daemon.readiness.describe()
        host = daemon.node_inference.proxy_host
        assert host is not None and host.running  # cold jobs' proxies
        assert host.labels == {"cynode.role": "proxy-host", "cynode.node_id": "NODE01"}
        assert daemon.readiness.steps["inference"].detail == f"existing: 1 model(s) ({MODEL})"
        report = plane.capabilities[-1].inference
        assert (report.supported, report.mode, report.running) == (True, "existing", True)
        assert list(report.models) == [MODEL]
        session = await plane.session(0)
        session.send(
            **assignment(
                job_id="P1",
                task_id="TP1",
                input_mode=job_pb2.INPUT_MODE_PROMPT,
                prompt="Say hello.",
                env={"CYNODE_NUM_PREDICT": "8"},
            )
        )
        session.send(
            **assignment(
                job_id="I1",
                task_id="TI1",
                input_mode=job_pb2.INPUT_MODE_COMMANDS,
                use_inference=True,
                commands=[
                    'echo "$CYNODE_MODEL"',
                    'curl -s $OLLAMA_BASE_URL/api/generate -d \'{"model":"smollm2:135m",'
                    '"prompt":"Say hi","stream":false,"options":{"num_predict":8}}\'',
                ],
            )
        )
        prompt = await result_of(session, "P1")
        assert prompt.status == job_pb2.JOB_STATUS_COMPLETED, prompt
        assert prompt.stdout.strip()
        curl = await result_of(session, "I1")
        assert curl.status == job_pb2.JOB_STATUS_COMPLETED, curl
        model_line, answer = curl.stdout.decode().split("\n", 1)
        assert model_line == MODEL  # the orchestrator's default reached the sandbox
        assert json.loads(answer)["response"].strip()
        relay_socket = daemon.node_inference.relay.socket_path  # type: ignore[union-attr]
    assert not relay_socket.exists()  # the relay went away with the node
    assert podman("pod", "ps", "-q", "--filter", "label=cynode.node_id=NODE01").stdout == ""
    # The proxy host went with the node too.
    assert (
        podman(
            "ps",
            "-aq",
            "--filter",
            "label=cynode.role=proxy-host",
            "--filter",
            "label=cynode.node_id=NODE01",
        ).stdout
        == ""
    )


@pytest.mark.podman
async def test_daemon_without_the_proxy_image_is_not_ready(
    node_config: NodeConfig,
    control_plane: tuple[FakeControlPlane, str],
    tags_server: tuple[str, list[str]],
) -> None:
    _, target = control_plane
    config = replace(
        node_config,
        control_plane_grpc=target,
        worker_api_port=0,
        inference_mode="existing",
        inference_url=tags_server[0],
        inference_proxy_image="localhost/cynode-no-proxy",
    )
    daemon = NodeDaemon(config)
    task = asyncio.create_task(daemon.run())
    try:
        for _ in range(3000):
            if daemon.readiness.steps["inference"].state.value == "failed":
                break
            await asyncio.sleep(0.02)
        text = daemon.readiness.describe()
        assert text.startswith("not ready: step inference failed"), text
        assert "localhost/cynode-no-proxy is missing" in text and "make images" in text
    finally:
        daemon.stop()
        await asyncio.wait_for(task, 60)
