"""Inference on the node: the relay, the modes (none / existing / container), the
capability report's models, and jobs that need inference through the whole daemon on
real Podman with the real dev model."""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from podman import PodmanClient

from cynode.controlplane.v1 import dispatch_pb2
from cynode.jobs.v1 import job_pb2
from cynode.node.config import REPO_CONTAINERS_CONF, NodeConfig
from cynode.node.daemon import NodeDaemon
from cynode.node.devinference import DevInferenceHandle, start_dev_inference
from cynode.node.inference import InferenceUnavailable
from cynode.node.inference_setup import NodeInference
from cynode.node.ollama_container import OllamaContainer, gpu_devices, ollama_create_kwargs
from cynode.node.relay import RELAY_SOCKET_NAME, InferenceRelay, relay_dir
from tests.node.cp_server import FakeControlPlane, StreamSession
from tests.node.daemonkit import running_daemon

MODEL = "smollm2:135m"
BASE_IMAGE = "localhost/cynode-base:latest"
# An Ollama stand-in for container mode (no ollama image can be pulled here): python3's
# stdlib in the base image answering /api/tags like Ollama on the container's port.
STAND_IN = (
    "import http.server, json\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = json.dumps({'models': [{'name': 'stand-in:1'}]}).encode()\n"
    "        self.send_response(200); self.end_headers(); self.wfile.write(body)\n"
    "http.server.HTTPServer(('0.0.0.0', 11434), H).serve_forever()\n"
)


def is_socket(path: str) -> bool:
    return Path(path).is_socket()


def podman(*args: str) -> subprocess.CompletedProcess[str]:
    env = {"CONTAINERS_CONF": str(REPO_CONTAINERS_CONF), "PATH": "/usr/bin:/usr/sbin:/bin"}
    return subprocess.run(["podman", *args], capture_output=True, text=True, env=env, check=False)


@pytest.fixture(scope="module")
async def dev_model() -> AsyncIterator[DevInferenceHandle]:
    handle = await start_dev_inference("127.0.0.1", 0, n_ctx=1024, default_num_predict=12)
    yield handle
    await handle.close()


@pytest.fixture
async def tags_server() -> AsyncIterator[tuple[str, list[str]]]:
    """A tiny Ollama stand-in on TCP that records the paths it is asked for."""
    paths: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        paths.append(request.path)
        return web.json_response({"models": [{"name": "tiny:1"}, {"model": "other:2"}]})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", paths
    await runner.cleanup()


# -- the relay ------------------------------------------------------------------------


async def test_relay_socket_is_open_to_the_sidecar_uid_and_forwards(
    tmp_path: Path, tags_server: tuple[str, list[str]]
) -> None:
    url, paths = tags_server
    directory = tmp_path / "inference"
    directory.mkdir()
    (directory / RELAY_SOCKET_NAME).write_text("stale")  # a killed node's leftover
    relay = InferenceRelay(directory, url)
    socket_path = await relay.start()
    assert await relay.start() == socket_path  # idempotent
    try:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o711
        assert stat.S_IMODE(socket_path.stat().st_mode) == 0o666 and socket_path.is_socket()
        transport = httpx.AsyncHTTPTransport(uds=str(socket_path))
        async with httpx.AsyncClient(transport=transport) as client:
            tags = await client.get("http://relay/api/tags", headers={"Authorization": "x"})
            pull = await client.post("http://relay/api/pull", json={"model": "x"})
        assert tags.json()["models"][0]["name"] == "tiny:1"
        assert pull.status_code == 403  # the relay guards too
        assert paths == ["/api/tags"]
    finally:
        await relay.close()
    assert not socket_path.exists() and not relay.running
    await relay.close()


def test_relay_dir_stays_under_the_socket_limit(tmp_path: Path) -> None:
    assert relay_dir(Path("/var/lib/cynode-node")) == Path("/var/lib/cynode-node/inference")
    chosen = relay_dir(tmp_path / ("x" * 120))
    assert len(str(chosen / RELAY_SOCKET_NAME)) <= 100
    chosen.rmdir()


# -- the modes ------------------------------------------------------------------------


def _no_podman() -> PodmanClient:
    raise AssertionError("podman is not needed in this mode")


async def test_mode_none_runs_nothing(node_config: NodeConfig) -> None:
    inference = NodeInference(node_config, _no_podman)
    status = await inference.start()
    assert (status.running, status.models) == (False, [])
    assert inference.pod_settings("m") is None and inference.relay is None
    await inference.close()


async def test_mode_existing_checks_ollama_then_relays_to_it(
    node_config: NodeConfig, tags_server: tuple[str, list[str]]
) -> None:
    url, _ = tags_server
    config = replace(node_config, inference_mode="existing", inference_url=url)
    inference = NodeInference(config, _no_podman)
    assert inference.pod_settings() is None  # not before the relay runs
    status = await inference.start()
    try:
        assert (status.running, status.models) == (True, ["tiny:1", "other:2"])
        pod = inference.pod_settings("from-orchestrator")
        assert pod is not None
        assert pod.relay_socket == str(config.state_dir / "inference" / RELAY_SOCKET_NAME)
        assert is_socket(pod.relay_socket)
        assert (pod.default_model, pod.proxy_image) == (
            "from-orchestrator",
            "localhost/cynode-proxy",
        )
        # The node's own setting wins over the orchestrator's default.
        mine = NodeInference(replace(config, inference_default_model="mine:1"), _no_podman)
        mine.relay = inference.relay
        assert (pod2 := mine.pod_settings("from-orchestrator")) is not None
        assert pod2.default_model == "mine:1"
    finally:
        await inference.close()


async def test_mode_existing_with_no_ollama_fails_and_starts_no_relay(
    node_config: NodeConfig,
) -> None:
    config = replace(node_config, inference_mode="existing", inference_url="http://127.0.0.1:1")
    inference = NodeInference(config, _no_podman)
    with pytest.raises(InferenceUnavailable, match="unreachable"):
        await inference.start()
    assert inference.relay is None


def test_container_kwargs_publish_on_loopback_with_models_and_gpus() -> None:
    kwargs = ollama_create_kwargs(
        "ollama/ollama", name="o", models_volume="models", host_port=11500, devices=["/dev/kfd"]
    )
    assert kwargs["ports"] == {"11434/tcp": ("127.0.0.1", 11500)}
    assert kwargs["volumes"] == {"models": {"bind": "/root/.ollama", "mode": "rw"}}
    assert kwargs["devices"] == ["/dev/kfd"] and "command" not in kwargs
    assert "cynode.node_id" not in kwargs["labels"]  # never removed as a job leftover


def test_gpu_devices_are_the_ones_present(tmp_path: Path) -> None:
    (tmp_path / "nvidia0").touch()
    found = gpu_devices((str(tmp_path / "nvidia0"), str(tmp_path / "kfd")))
    assert found == [str(tmp_path / "nvidia0")]


@pytest.mark.podman
async def test_mode_container_with_a_missing_image_says_how_to_fix_it(
    node_config: NodeConfig, podman_client: PodmanClient
) -> None:
    config = replace(
        node_config, inference_mode="container", inference_image="localhost/cynode-no-ollama"
    )
    inference = NodeInference(config, lambda: podman_client)
    with pytest.raises(InferenceUnavailable, match="localhost/cynode-no-ollama is missing"):
        await inference.start()
    assert inference.relay is None
    await inference.close()


@pytest.fixture
def stand_in_names() -> Iterator[tuple[str, str]]:
    name, volume = "cynode-test-ollama", "cynode-test-ollama-models"
    yield name, volume
    podman("rm", "-f", name)
    podman("volume", "rm", "-f", volume)


@pytest.mark.podman
async def test_mode_container_starts_reuses_and_removes_the_ollama_container(
    node_config: NodeConfig,
    podman_client: PodmanClient,
    stand_in_names: tuple[str, str],
    unused_tcp_port: int,
) -> None:
    name, volume = stand_in_names
    config = replace(
        node_config,
        inference_mode="container",
        inference_image=BASE_IMAGE,
        inference_models_volume=volume,
        inference_url=f"http://127.0.0.1:{unused_tcp_port}",
    )
    inference = NodeInference(
        config, lambda: podman_client, container_command=["python3", "-c", STAND_IN]
    )
    assert inference.container is not None
    inference.container.name = name
    try:
        status = await inference.start()
        assert (status.running, status.models) == (True, ["stand-in:1"])
        assert inference.upstream == f"http://127.0.0.1:{unused_tcp_port}"
        first = inference.container.container_id
        assert podman("volume", "exists", volume).returncode == 0
        # A second start (a retried start-up step) reuses the running container.
        await inference.start()
        assert inference.container.container_id == first
        pod = inference.pod_settings()
        assert pod is not None and is_socket(pod.relay_socket)
    finally:
        await inference.close()
    assert podman("container", "exists", name).returncode == 1
    assert podman("volume", "exists", volume).returncode == 0  # the models stay


@pytest.mark.podman
async def test_mode_container_reports_a_container_that_exits(
    node_config: NodeConfig, podman_client: PodmanClient, stand_in_names: tuple[str, str]
) -> None:
    name, volume = stand_in_names
    container = OllamaContainer(
        lambda: podman_client,
        image=BASE_IMAGE,
        models_volume=volume,
        url="http://127.0.0.1:1",
        name=name,
        command=["sh", "-c", "exit 3"],
    )
    # A stopped container of that name (a node killed long ago) is replaced, not reused.
    assert podman("create", "--name", name, BASE_IMAGE, "true").returncode == 0
    with pytest.raises(InferenceUnavailable, match="exited"):
        await container.ensure()
    await container.stop()


@pytest.mark.podman
async def test_mode_container_reports_one_that_never_answers(
    node_config: NodeConfig, podman_client: PodmanClient, stand_in_names: tuple[str, str]
) -> None:
    name, volume = stand_in_names
    container = OllamaContainer(
        lambda: podman_client,
        image=BASE_IMAGE,
        models_volume=volume,
        url="http://127.0.0.1:1",
        name=name,
        command=["sleep", "60"],
        ready_timeout_s=1,
    )
    with pytest.raises(InferenceUnavailable, match="did not answer"):
        await container.ensure()
    await container.stop()


# -- the whole daemon -----------------------------------------------------------------


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
    )
    async with running_daemon(config) as daemon:
        assert daemon.readiness.ready, daemon.readiness.describe()
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
