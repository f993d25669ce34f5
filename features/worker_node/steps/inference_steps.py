# mypy: disable-error-code="untyped-decorator"
"""Steps for features/worker_node/inference.feature: the dev model as a real process,
a node in inference mode `existing` relaying to it, and inference jobs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from behave import given, then, when

sys.path.insert(0, str(Path(__file__).resolve().parent))

from plane import start_node, wait_readyz  # type: ignore[import-not-found]

from cynode.jobs.v1 import job_pb2
from cynode.testing import DevModel, wait_until

READY_WITHIN = 90.0
CREDENTIAL_WORDS = ("NODE_PSK", "TOKEN", "PASSWORD", "SECRET", "JWT")


@given("the development model backend")
def dev_model(context: Any) -> None:
    context.model = DevModel(Path(tempfile.mkdtemp(prefix="cynode-bdd-model-")) / "model.log")
    context.cleanups.append(context.model.stop)
    context.model.start(timeout=120)


@given("a node with inference connected to it")
def node_with_inference(context: Any) -> None:
    context.node = start_node(
        context.plane.target,
        CYNODE_INFERENCE_MODE="existing",
        CYNODE_INFERENCE_URL=context.model.url,
    )
    wait_readyz(context.node, lambda r: r.status_code == 200, READY_WITHIN)


def _assign(context: Any, **fields: Any) -> None:
    job_id = fields["job_id"]
    context.plane.assign(job_pb2.JobSpec(task_id=f"T-{job_id}", attempt=1, **fields))


@when('the control plane assigns inference job "{job_id}" running "{command}"')
def assign_inference(context: Any, job_id: str, command: str) -> None:
    _assign(
        context,
        job_id=job_id,
        input_mode=job_pb2.INPUT_MODE_COMMANDS,
        commands=[command],
        use_inference=True,
    )


@when('the control plane assigns prompt job "{job_id}" with prompt "{prompt}"')
def assign_prompt(context: Any, job_id: str, prompt: str) -> None:
    _assign(
        context,
        job_id=job_id,
        input_mode=job_pb2.INPUT_MODE_PROMPT,
        prompt=prompt,
        env={"CYNODE_NUM_PREDICT": "12"},
    )


def _completed(context: Any, job_id: str) -> job_pb2.JobResult:
    result: job_pb2.JobResult = context.plane.result(job_id, within=180)
    assert result.status == job_pb2.JOB_STATUS_COMPLETED, result
    return result


@then('job "{job_id}" completes with model text in the "{field}" field')
def model_text_in(context: Any, job_id: str, field: str) -> None:
    answer = json.loads(_completed(context, job_id).stdout)
    assert answer["model"] == "smollm2:135m", answer
    assert str(answer[field]).strip(), answer


@then('job "{job_id}" completes with some model text')
def some_model_text(context: Any, job_id: str) -> None:
    result = _completed(context, job_id)
    assert result.stdout.strip(), result
    assert result.stderr == b"", result.stderr


def _podman_lines(*args: str) -> list[str]:
    listed = subprocess.run(["podman", *args], capture_output=True, text=True, check=True)
    return listed.stdout.split()


@then("the node ran jobs in warm pods it made while idle")
def ran_in_warm_pods(context: Any) -> None:
    log = context.node.log.read_text(errors="replace")
    assert "runs in warm pod cynode-pod-warm-" in log, context.node.tail()


@then("the node keeps only its one warm pod, no pod of a finished job")
def only_the_warm_pod(context: Any) -> None:
    found = re.search(r"warm pod cynode-pod-warm-([0-9a-f]+)-", context.node.log.read_text())
    assert found is not None, context.node.tail()
    pool = f"label=cynode.warm_pool={found.group(1)}"
    node = "label=cynode.node_id=NODE01"

    def settled() -> bool:
        # A finished job's pod (a used warm pod, or one it made itself, labelled with its
        # job id) goes with its sandbox; the one warm pod left holds no sandbox. (The
        # node's warm sandboxes for plain jobs carry no job id: not a job's, not counted.)
        sandboxes = _podman_lines(
            "ps",
            "-aq",
            "--filter",
            node,
            "--filter",
            "label=cynode.role=sandbox",
            "--filter",
            "label=cynode.job_id",
        )
        job_pods = _podman_lines(
            "pod", "ps", "-q", "--filter", node, "--filter", "label=cynode.job_id"
        )
        warm = _podman_lines("pod", "ps", "-q", "--filter", pool)
        return not sandboxes and not job_pods and len(warm) == 1

    wait_until(settled, 30, "only the warm pod to be left")


@when("the node stops")
def node_stops(context: Any) -> None:
    context.node.stop()


@then("the node leaves no pod behind")
def no_pods(context: Any) -> None:
    def none_left() -> bool:
        return _podman_lines("pod", "ps", "-q", "--filter", "label=cynode.node_id=NODE01") == []

    wait_until(none_left, 30, "the node's pods to be removed")


@then('job "{job_id}" has "{text}" in its stdout')
def has_line(context: Any, job_id: str, text: str) -> None:
    lines = _completed(context, job_id).stdout.decode().splitlines()
    assert text in lines, lines


@then('job "{job_id}" has no credential in its stdout')
def no_credential(context: Any, job_id: str) -> None:
    names = [
        line.split("=", 1)[0] for line in _completed(context, job_id).stdout.decode().splitlines()
    ]
    leaked = [n for n in names if any(word in n.upper() for word in CREDENTIAL_WORDS)]
    assert leaked == [], leaked
