"""Jobs that need inference on a cold node, on real Podman: the sandbox alone (loopback
only) with the node's own proxy, the real model.

No warm pool here, so every job takes the cold path (SPEC §4.6): its sandbox runs alone
with `--network none` and the node's in-process proxy listening inside it, forwarding
through a real relay socket to either the real dev model (SmolLM2-135M) or a scripted
Ollama stand-in that records what reaches it. Warm pods (the sidecar) are
test_warm_pool.py's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from podman import PodmanClient

from cynode.jobs.v1 import job_pb2
from cynode.node.devinference import DevInferenceHandle, start_dev_inference
from cynode.node.inference.relay import InferenceRelay
from cynode.node.runtime import JobRunner, SandboxSettings, ops
from cynode.node.runtime.context import JobContext
from cynode.node.runtime.inference_pod import InferencePod
from cynode.node.runtime.job_proxy import remove_job_dirs, socket_root
from cynode.node.runtime.pod_hook import InferencePodHook
from cynode.node.runtime.settings import InferencePodSettings
from tests.node.runtime.conftest import make_spec
from tests.node.runtime.inference_support import (
    MODEL,
    PROXY_IMAGE,
    ScriptedOllama,
    hosted_relay,
)

pytestmark = [pytest.mark.podman, pytest.mark.model]

COMPLETED = job_pb2.JOB_STATUS_COMPLETED
FAILED = job_pb2.JOB_STATUS_FAILED
GENERATE = '{"model":"smollm2:135m","prompt":"Say hi","stream":false,"options":{"num_predict":8}}'


@pytest.fixture(scope="module")
async def dev_model() -> AsyncIterator[DevInferenceHandle]:
    handle = await start_dev_inference("127.0.0.1", 0, n_ctx=1024, default_num_predict=16)
    yield handle
    await handle.close()


@pytest.fixture(scope="module")
async def model_relay(
    dev_model: DevInferenceHandle,
    tmp_path_factory: pytest.TempPathFactory,
    podman_client: PodmanClient,
) -> AsyncIterator[InferenceRelay]:
    async with hosted_relay(
        tmp_path_factory.mktemp("relay"), dev_model.url, podman_client
    ) as relay:
        yield relay


@pytest.fixture(scope="module")
async def scripted_relay(
    scripted: tuple[ScriptedOllama, str],
    tmp_path_factory: pytest.TempPathFactory,
    podman_client: PodmanClient,
) -> AsyncIterator[InferenceRelay]:
    async with hosted_relay(tmp_path_factory.mktemp("srelay"), scripted[1], podman_client) as relay:
        yield relay


def with_inference(
    settings: SandboxSettings, relay: InferenceRelay, **changes: object
) -> SandboxSettings:
    pod = InferencePodSettings(
        relay_socket=str(relay.socket_path), proxy_image=PROXY_IMAGE, ready_timeout_s=30
    )
    return dataclasses.replace(settings, inference=dataclasses.replace(pod, **changes))  # type: ignore[arg-type]


async def run(
    client: PodmanClient, settings: SandboxSettings, spec: job_pb2.JobSpec
) -> job_pb2.JobResult:
    return await JobRunner(client, settings).run(spec)


@pytest.mark.usefixtures("clean_node")
async def test_real_model_over_localhost_and_over_the_proxy_socket(
    podman_client: PodmanClient, settings: SandboxSettings, model_relay: InferenceRelay
) -> None:
    spec = make_spec(
        use_inference=True,
        commands=[
            'echo "$OLLAMA_BASE_URL"; echo "$INFERENCE_PROXY_URL"',
            f"curl -s $OLLAMA_BASE_URL/api/generate -d '{GENERATE}'; echo",
            'sock=$(python3 -c "import os,urllib.parse as u; '
            "print(u.unquote(os.environ['INFERENCE_PROXY_URL'][len('http+unix://'):]))\"); "
            f"curl -s --unix-socket \"$sock\" http://proxy/api/generate -d '{GENERATE}'; echo",
        ],
    )
    result = await run(podman_client, with_inference(settings, model_relay), spec)
    assert result.status == COMPLETED, result
    lines = result.stdout.decode().splitlines()
    assert lines[:2] == [
        "http://localhost:11434",
        "http+unix://%2Frun%2Fcynode-inference%2Fproxy.sock",
    ]
    for answer in (json.loads(lines[2]), json.loads(lines[3])):
        assert answer["model"] == MODEL and answer["done"] is True
        assert answer["response"].strip(), answer


@pytest.mark.usefixtures("clean_node")
async def test_without_sandbox_tcp_the_sandbox_has_the_socket_alone(
    podman_client: PodmanClient, settings: SandboxSettings, scripted_relay: InferenceRelay
) -> None:
    spec = make_spec(
        use_inference=True,
        commands=[
            'echo "tcp=${OLLAMA_BASE_URL:-none} host=${OLLAMA_HOST:-none}"',
            "curl -s -m 3 -o /dev/null http://127.0.0.1:11434/api/tags && echo tcp-open"
            " || echo tcp-closed",
            'sock=$(python3 -c "import os,urllib.parse as u; '
            "print(u.unquote(os.environ['INFERENCE_PROXY_URL'][len('http+unix://'):]))\"); "
            'curl -s -o /dev/null -w "socket %{http_code}\\n" --unix-socket "$sock"'
            " http://proxy/api/tags",
        ],
    )
    socket_only = with_inference(settings, scripted_relay, sandbox_tcp=False)
    result = await run(podman_client, socket_only, spec)
    assert result.status == COMPLETED, result
    assert result.stdout.decode().splitlines() == [
        "tcp=none host=none",
        "tcp-closed",
        "socket 200",
    ], result


@pytest.mark.usefixtures("clean_node")
async def test_the_sandbox_reaches_the_proxy_and_nothing_else(
    podman_client: PodmanClient, settings: SandboxSettings, model_relay: InferenceRelay
) -> None:
    # An orchestrator-like port on the host: reachable from the node, never from a pod.
    host_server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = host_server.sockets[0].getsockname()[1]
    relay_path = model_relay.socket_path
    try:
        spec = make_spec(
            use_inference=True,
            commands=[
                "ls /sys/class/net",
                f"curl -sS -m 3 http://127.0.0.1:{port}/ >/dev/null 2>&1 && echo host-open"
                " || echo host-closed",
                "curl -sS -m 3 http://1.1.1.1/ >/dev/null 2>&1 && echo internet"
                " || echo no-internet",
                f"test -e {relay_path} && echo relay-path || echo no-relay-path",
                "test -e /run/cynode-upstream && echo upstream-dir || echo no-upstream-dir",
                "test -S /run/cynode-inference/proxy.sock && echo proxy-sock",
                "curl -s -o /dev/null -w 'pull %{http_code}\\n' $OLLAMA_BASE_URL/api/pull"
                ' -d \'{"model":"x"}\'',
                "head -c 11534336 /dev/zero > /tmp/big; curl -s -o /dev/null"
                " -w 'big %{http_code}\\n' --data-binary @/tmp/big $OLLAMA_BASE_URL/api/generate",
                "touch /run/cynode-inference/x 2>/dev/null && echo shared-rw || echo shared-ro",
            ],
        )
        result = await run(podman_client, with_inference(settings, model_relay), spec)
    finally:
        host_server.close()
        await host_server.wait_closed()
    assert result.status == COMPLETED, result
    assert result.stdout.decode().splitlines() == [
        "lo",
        "host-closed",
        "no-internet",
        "no-relay-path",
        "no-upstream-dir",
        "proxy-sock",
        "pull 403",
        "big 413",
        "shared-ro",
    ]


@pytest.mark.usefixtures("clean_node")
async def test_a_prompt_job_is_answered_by_the_real_model(
    podman_client: PodmanClient, settings: SandboxSettings, model_relay: InferenceRelay
) -> None:
    spec = make_spec(
        input_mode=job_pb2.INPUT_MODE_PROMPT,
        prompt="What is the capital of France? Answer in one word.",
        env={"CYNODE_NUM_PREDICT": "12"},
    )
    # No model anywhere: the runner asks the proxy's /api/tags for the first one.
    result = await run(podman_client, with_inference(settings, model_relay), spec)
    assert (result.status, result.exit_code) == (COMPLETED, 0), result
    assert result.stdout.strip() and result.stderr == b""


@pytest.mark.usefixtures("clean_node")
async def test_a_prompt_is_sent_as_text_and_never_run(
    podman_client: PodmanClient,
    settings: SandboxSettings,
    scripted: tuple[ScriptedOllama, str],
    scripted_relay: InferenceRelay,
) -> None:
    upstream, _ = scripted
    upstream.seen.clear()
    upstream.acked.clear()
    prompt = (
        "$(curl -s localhost:11434/api/version) `curl -s localhost:11434/api/version`; rm -rf /"
    )
    spec = make_spec(input_mode=job_pb2.INPUT_MODE_PROMPT, prompt=prompt, model="scripted:1")
    result = await run(podman_client, with_inference(settings, scripted_relay), spec)
    assert (result.status, result.exit_code) == (COMPLETED, 0), result
    assert result.stdout == b"scripted reply \n"
    # Had the prompt been run, its curls would have reached the upstream as /api/version.
    assert [(s.method, s.path) for s in upstream.seen] == [("POST", "/api/chat")]
    body = json.loads(upstream.seen[0].body)
    assert body["model"] == "scripted:1" and body["stream"] is True
    assert body["messages"] == [{"role": "user", "content": prompt}]


@pytest.mark.usefixtures("clean_node")
async def test_credentials_stall_and_streaming_through_the_pod(
    podman_client: PodmanClient,
    settings: SandboxSettings,
    scripted: tuple[ScriptedOllama, str],
    scripted_relay: InferenceRelay,
) -> None:
    upstream, _ = scripted
    upstream.seen.clear()
    upstream.acked.clear()
    upstream.stream_log.clear()
    # Reads the first streamed line, acknowledges it with a second request, then reads on:
    # with a buffering hop the upstream would wait for the ack in vain ("no ack").
    streamer = (
        "import http.client\n"
        "c = http.client.HTTPConnection('localhost', 11434, timeout=60)\n"
        "c.request('POST', '/api/generate', body=b'{}')\n"
        "r = c.getresponse()\n"
        "print('got', r.readline().decode().strip(), flush=True)\n"
        "a = http.client.HTTPConnection('localhost', 11434, timeout=60)\n"
        "a.request('GET', '/api/version'); a.getresponse().read()\n"
        "print('then', r.readline().decode().strip(), flush=True)\n"
    )
    spec = make_spec(
        use_inference=True,
        commands=[
            "curl -s -H 'Authorization: Bearer sandbox-secret' -H 'Cookie: c=1'"
            " $OLLAMA_BASE_URL/api/tags; echo",
            "curl -s -o /dev/null -w 'stall %{http_code}\\n' $OLLAMA_BASE_URL/api/generate"
            " -d stall",
            f'python3 -c "{streamer}"',
        ],
    )
    pod_settings = with_inference(settings, scripted_relay, proxy_timeout_s=2)
    result = await run(podman_client, pod_settings, spec)
    assert result.status == COMPLETED, result
    assert result.stdout.decode().splitlines() == [
        '{"models": [{"name": "scripted:1", "model": "scripted:1"}]}',
        "stall 504",
        'got {"response":"first","done":false}',
        'then {"response":"second","done":true}',
    ]
    tags = next(s for s in upstream.seen if s.path == "/api/tags")
    lowered = {k.lower() for k in tags.headers}
    assert "authorization" not in lowered and "cookie" not in lowered
    assert upstream.stream_log == ["first sent", "ack before end", "finished"]


@pytest.mark.usefixtures("clean_node")
async def test_a_cold_job_logs_where_its_start_went(
    podman_client: PodmanClient,
    settings: SandboxSettings,
    scripted_relay: InferenceRelay,
    caplog: pytest.LogCaptureFixture,
) -> None:
    spec = make_spec(use_inference=True, commands=["true"])
    with caplog.at_level(logging.INFO, logger="cynode.node.runtime.pod_hook"):
        result = await run(podman_client, with_inference(settings, scripted_relay), spec)
    assert result.status == COMPLETED, result
    [line] = [r.getMessage() for r in caplog.records if "cold sandbox started" in r.getMessage()]
    steps = re.findall(r"(\w[\w ]*?) (\d+) ms", line.split("started: ", 1)[1])
    # In the order they happened: the proxy listens in the sandbox's netns after its
    # init, is handed to the proxy host, whose child serves it before the start.
    assert [name for name, _ in steps] == [
        "socket",
        "sandbox created",
        "sandbox initialised",
        "netns bind",
        "proxy handed",
        "proxy serving",
        "sandbox started",
    ]
    assert all(int(ms) >= 0 for _, ms in steps)


@pytest.mark.usefixtures("clean_node")
async def test_timeout_in_a_pod_stops_the_job_and_removes_everything(
    podman_client: PodmanClient, settings: SandboxSettings, model_relay: InferenceRelay
) -> None:
    spec = make_spec(use_inference=True, commands=["sleep 60"], timeout_seconds=2)
    result = await run(podman_client, with_inference(settings, model_relay), spec)
    assert (result.status, result.reason) == (FAILED, "timeout")


@pytest.mark.usefixtures("clean_node")
async def test_an_inference_job_on_a_node_without_inference_fails_clearly(
    podman_client: PodmanClient, settings: SandboxSettings
) -> None:
    for spec in (
        make_spec(input_mode=job_pb2.INPUT_MODE_PROMPT, prompt="hi"),
        make_spec(use_inference=True, commands=["true"]),
    ):
        result = await run(podman_client, settings, spec)
        assert result.status == FAILED and result.exit_code == -1
        assert result.reason.startswith("error: this node offers no inference"), result.reason


@pytest.mark.usefixtures("clean_node")
async def test_a_missing_relay_socket_fails_the_job_before_anything_is_made(
    podman_client: PodmanClient, settings: SandboxSettings, tmp_path: Path
) -> None:
    pod = InferencePodSettings(relay_socket=str(tmp_path / "none.sock"), proxy_image=PROXY_IMAGE)
    spec = make_spec(use_inference=True, commands=["true"])
    result = await run(podman_client, dataclasses.replace(settings, inference=pod), spec)
    assert result.status == FAILED and "relay socket" in result.reason


@pytest.mark.usefixtures("clean_node")
async def test_a_cold_job_makes_no_pod_and_no_sidecar(
    podman_client: PodmanClient,
    settings: SandboxSettings,
    model_relay: InferenceRelay,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The sandbox image has no proxy entrypoint: a sidecar could not run. A cold job
    # never makes one (nor a pod): its proxy is the node's own.
    broken = with_inference(settings, model_relay, proxy_image="localhost/cynode-sandbox:latest")

    async def no_pod(self: InferencePod) -> None:
        raise AssertionError("a cold job made a pod")

    monkeypatch.setattr(InferencePod, "create", no_pod)
    spec = make_spec(use_inference=True, commands=["curl -sf $OLLAMA_BASE_URL/api/tags >/dev/null"])
    result = await run(podman_client, broken, spec)
    assert result.status == COMPLETED, result


@pytest.mark.usefixtures("clean_node")
async def test_a_proxy_that_cannot_listen_in_the_sandbox_fails_the_job_before_it_starts(
    podman_client: PodmanClient,
    settings: SandboxSettings,
    model_relay: InferenceRelay,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: list[str] = []
    start = ops.start_container

    def recorded_start(client: PodmanClient, container_id: str) -> None:
        started.append(container_id)
        start(client, container_id)

    # A pid with no process: its network namespace cannot be entered.
    monkeypatch.setattr(ops, "container_pid", lambda client, container_id: 2**22 + 1)
    monkeypatch.setattr(ops, "start_container", recorded_start)
    pod_settings = with_inference(settings, model_relay)
    result = await run(
        podman_client, pod_settings, make_spec(use_inference=True, commands=["true"])
    )
    assert result.status == FAILED and result.reason.startswith("error: "), result
    assert started == []
    assert pod_settings.inference is not None
    assert not any(socket_root(pod_settings.inference).iterdir())


@pytest.mark.usefixtures("clean_node")
async def test_start_up_cleanup_removes_the_socket_dirs_a_killed_node_left(
    podman_client: PodmanClient, settings: SandboxSettings, model_relay: InferenceRelay
) -> None:
    # A cold job's proxy, as a node killed mid-job leaves its directory.
    pod_settings = with_inference(settings, model_relay)
    assert pod_settings.inference is not None
    ctx = JobContext(
        spec=make_spec(use_inference=True, commands=["true"]),
        settings=pod_settings,
        client=podman_client,
        timeout_s=10,
    )
    hook = InferencePodHook(pod_settings.inference)
    await hook.prestart(ctx)
    assert hook.proxy is not None and hook.proxy.socket_path.is_socket()
    directory = hook.proxy.socket_path.parent
    assert remove_job_dirs(socket_root(pod_settings.inference)) == 1
    assert not directory.exists()
    await hook.poststop(ctx)  # what the node had made is already gone: quiet
