# mypy: disable-error-code="untyped-decorator"
"""Steps for features/worker_node (see ../environment.py for the processes)."""

from __future__ import annotations

import secrets
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
from behave import given, then, when

sys.path.insert(0, str(Path(__file__).resolve().parent))

from plane import PlaneThread, start_node, wait_readyz  # type: ignore[import-not-found]

from cynode.jobs.v1 import job_pb2
from cynode.testing import Orchestrator, wait_until

READY_WITHIN = 90.0


def _spec(job_id: str, command: str, timeout: int = 0) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        job_id=job_id,
        task_id=f"T-{job_id}",
        attempt=1,
        input_mode=job_pb2.INPUT_MODE_COMMANDS,
        commands=[command],
        timeout_seconds=timeout,
    )


@given("a control plane stand-in")
def plane_stand_in(context: Any) -> None:
    context.plane = PlaneThread()


@given("a control plane stand-in that refuses registration")
def plane_refusing(context: Any) -> None:
    import grpc

    context.plane = PlaneThread()
    context.plane.plane.fail_register = grpc.StatusCode.UNAVAILABLE


@given('a control plane stand-in whose sandbox image is "{image}"')
def plane_with_image(context: Any, image: str) -> None:
    context.plane = PlaneThread()
    context.plane.plane.config.sandbox.default_image = image


@given("a node started against it")
def node_started(context: Any) -> None:
    context.node = start_node(context.plane.target)


@given("a node connected to it")
def node_connected(context: Any) -> None:
    node_started(context)
    wait_readyz(context.node, lambda r: r.status_code == 200, READY_WITHIN)


@when('the control plane assigns job "{job_id}" running "{command}"')
def assign(context: Any, job_id: str, command: str) -> None:
    context.plane.assign(_spec(job_id, command))


@when(
    'the control plane assigns job "{job_id}" running "{command}" with a timeout of {n:d} seconds'
)
def assign_with_timeout(context: Any, job_id: str, command: str, n: int) -> None:
    context.plane.assign(_spec(job_id, command, timeout=n))


@then('job "{job_id}" completes with stdout "{text}"')
def completes_with(context: Any, job_id: str, text: str) -> None:
    result = context.plane.result(job_id)
    assert result.status == job_pb2.JOB_STATUS_COMPLETED, result
    assert result.stdout.decode().strip() == text, result.stdout


@then('job "{job_id}" fails with reason "{reason}"')
def fails_with(context: Any, job_id: str, reason: str) -> None:
    result = context.plane.result(job_id)
    assert result.status == job_pb2.JOB_STATUS_FAILED, result
    assert result.reason == reason, result.reason


@then('job "{job_id}" completes with {size:d} bytes of stdout marked truncated')
def truncated(context: Any, job_id: str, size: int) -> None:
    result = context.plane.result(job_id)
    assert result.status == job_pb2.JOB_STATUS_COMPLETED, result
    assert len(result.stdout) == size, len(result.stdout)
    assert set(result.stdout) == {ord("x")}
    assert result.stdout_truncated and not result.stderr_truncated


@when("I send 11 MiB to the node's worker API")
def send_big(context: Any) -> None:
    body = b"z" * (11 * 1024 * 1024)
    context.answer = httpx.post(f"{context.node.worker_url}/readyz", content=body, timeout=60)


@then("the node answers 413")
def answers_413(context: Any) -> None:
    assert context.answer.status_code == 413, context.answer.status_code
    assert context.answer.headers["content-type"] == "application/problem+json"


@then('readyz answers 503 naming step "{step}"')
def readyz_503(context: Any, step: str) -> None:
    answer = wait_readyz(context.node, lambda r: f"step {step} failed" in r.text, READY_WITHIN)
    assert answer.status_code == 503, answer.status_code
    context.answer = answer


@then('the readyz answer mentions "{text}"')
def readyz_mentions(context: Any, text: str) -> None:
    assert text in context.answer.text, context.answer.text


@then('healthz answers "ok"')
def healthz_ok(context: Any) -> None:
    answer = httpx.get(f"{context.node.worker_url}/healthz", timeout=5)
    assert (answer.status_code, answer.text) == (200, "ok")


@when("the control plane accepts registration")
def accept_registration(context: Any) -> None:
    context.plane.plane.fail_register = None


@then('readyz answers 200 "ready"')
def readyz_ready(context: Any) -> None:
    answer = wait_readyz(context.node, lambda r: r.status_code == 200, READY_WITHIN)
    assert answer.text == "ready"


# -- the orchestrator + node scenario ------------------------------------------------


@given("a running orchestrator with its control plane")
def orchestrator(context: Any) -> None:
    context.psk = secrets.token_urlsafe(24)
    context.admin_password = secrets.token_urlsafe(16)
    context.orchestrator = Orchestrator(
        Path(tempfile.mkdtemp(prefix="cynode-bdd-orch-")) / "orchestrator",
        context.admin_password,
        context.psk,
        settings={"CYNODE_REQUIRE_INFERENCE": "false"},
        grace=30.0,
    )
    context.orchestrator.start()


@given("a node registered with the orchestrator")
def node_with_orchestrator(context: Any) -> None:
    context.node = start_node(
        context.orchestrator.control_grpc,
        psk=context.psk,
        CYNODE_ORCHESTRATOR_URL=context.orchestrator.control_url,
    )
    wait_readyz(context.node, lambda r: r.status_code == 200, READY_WITHIN)


@when('the admin creates a task with commands "{command}" over REST')
def create_task(context: Any, command: str) -> None:
    base = context.orchestrator.gateway_url
    login = httpx.post(
        f"{base}/v1/auth/login",
        json={"handle": "admin", "password": context.admin_password},
        timeout=10,
    )
    assert login.status_code == 200, login.text
    context.headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    created = httpx.post(
        f"{base}/v1/tasks",
        json={"input_mode": "commands", "commands": [command]},
        headers=context.headers,
        timeout=10,
    )
    assert created.status_code == 201, created.text
    context.task_id = created.json()["task_id"]


@then('the task completes with stdout "{text}"')
def task_completes(context: Any, text: str) -> None:
    url = f"{context.orchestrator.gateway_url}/v1/tasks/{context.task_id}/result"
    last: dict[str, Any] = {}

    def terminal() -> bool:
        nonlocal last
        last = httpx.get(url, headers=context.headers, timeout=10).json()
        return last.get("status") in ("completed", "failed", "canceled")

    wait_until(terminal, 120, "the task to finish")
    assert last["status"] == "completed", last
    assert last["stdout"].strip() == text, last


def _artifacts(context: Any) -> dict[str, Any]:
    url = f"{context.orchestrator.gateway_url}/v1/tasks/{context.task_id}/artifacts"
    last: dict[str, Any] = {}

    def complete() -> bool:
        nonlocal last
        last = httpx.get(url, headers=context.headers, timeout=10).json()
        return bool(last.get("complete"))

    wait_until(complete, 60, "the task's artifacts to be complete")
    return last


@then(
    'the task\'s artifacts are complete: "{first}" of {first_size:d} bytes and "{second}" of '
    "{second_size:d} bytes, nothing else"
)
def artifacts_complete(
    context: Any, first: str, first_size: int, second: str, second_size: int
) -> None:
    listed = _artifacts(context)
    sizes = {a["name"]: int(a["size_bytes"]) for a in listed["artifacts"]}
    assert sizes == {first: first_size, second: second_size}, listed
    context.artifacts = {a["name"]: a for a in listed["artifacts"]}


@then('downloading "{name}" gives "{text}"')
def artifact_download(context: Any, name: str, text: str) -> None:
    artifact = context.artifacts[name]
    url = (
        f"{context.orchestrator.gateway_url}/v1/tasks/{context.task_id}"
        f"/artifacts/{artifact['artifact_id']}"
    )
    resp = httpx.get(url, headers=context.headers, timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.content == text.encode(), resp.content
    assert resp.headers["etag"] == f'"{artifact["sha256"]}"'
