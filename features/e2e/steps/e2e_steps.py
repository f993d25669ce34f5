"""Steps for features/e2e: cynork for what a user does, REST (httpx) for checks."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from behave import given, then, when

ROOT = Path(__file__).resolve().parents[3]
CYNORK = ROOT / ".venv" / "bin" / "cynork"
TERMINAL = {"completed", "failed", "canceled"}


def cynork(context: Any, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HOME": str(context.home),
        "CYNORK_GATEWAY_URL": context.stack.gateway_url,
    }
    env.pop("CYNORK_TOKEN", None)
    done = subprocess.run(
        [str(CYNORK), *argv], input=stdin, capture_output=True, text=True, env=env, timeout=300
    )
    context.last = done
    return done


def api(context: Any, method: str, path: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {context.token}"}
    return httpx.request(method, f"{context.stack.gateway_url}{path}", headers=headers, timeout=15)


def result(context: Any) -> dict[str, Any]:
    resp = api(context, "GET", f"/v1/tasks/{context.task_id}/result")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def wait_for(context: Any, statuses: set[str], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = result(context)
        if body["status"] in statuses:
            context.result = body
            return body
        time.sleep(0.3)
    raise AssertionError(
        f"task {context.task_id} not in {sorted(statuses)} after {timeout}s: {body}"
    )


def create(context: Any, *argv: str) -> None:
    done = cynork(context, "task", "create", *argv, "-o", "json")
    assert done.returncode == 0, f"cynork task create failed: {done.stderr}"
    context.task_id = json.loads(done.stdout)["task_id"]


@given("I am logged in as admin with cynork")
def step_login(context: Any) -> None:
    password = context.stack.creds.admin_password
    done = cynork(
        context, "auth", "login", "-u", "admin", "--password-stdin", stdin=password + "\n"
    )
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load((context.home / ".config" / "cynork" / "config.yaml").read_text())
    context.token = config["token"]
    context.seen_tokens.update({config["token"], config.get("refresh_token", "")})
    who = cynork(context, "auth", "whoami")
    assert who.returncode == 0 and "user=admin" in who.stdout, who.stdout + who.stderr


def _the_node(context: Any) -> dict[str, Any]:
    resp = api(context, "GET", "/v1/nodes")
    assert resp.status_code == 200, resp.text
    nodes = [n for n in resp.json()["nodes"] if n["node_slug"] == "e2e-node"]
    assert len(nodes) == 1, resp.json()
    context.node = nodes[0]
    return nodes[0]


@then("the node is registered, online, and has acknowledged its config")
def step_node_registered(context: Any) -> None:
    node = _the_node(context)
    assert node["status"] == "online", node
    assert len(node["config_version"]) == 26, node  # a ULID
    assert node["config_status"] == "applied", node


@then("the node is registered with inference and has acknowledged its config")
def step_node_inference(context: Any) -> None:
    step_node_registered(context)
    assert context.node["inference_supported"] is True, context.node


@when('I create a task with cynork running the command "{command}"')
def step_create_command(context: Any, command: str) -> None:
    create(context, "--command", command)


@when('I create a task with cynork running the command "{command}" with a timeout of {n:d} seconds')
def step_create_timeout(context: Any, command: str, n: int) -> None:
    create(context, "--command", command, "--timeout", str(n))


@when("I create a task with cynork whose command calls the model at $OLLAMA_BASE_URL")
def step_create_inference(context: Any) -> None:
    tags = httpx.get(f"{context.stack.model_url}/api/tags", timeout=10).json()
    model = tags["models"][0]["name"]
    body = json.dumps(
        {"model": model, "prompt": "Say OK.", "stream": False, "options": {"num_predict": 8}}
    )
    command = (
        'test -n "$OLLAMA_BASE_URL" && '
        f'curl -sS -f "$OLLAMA_BASE_URL/api/generate" -d {shlex.quote(body)} | python3 -c '
        '\'import json,sys; d=json.load(sys.stdin); print("model-done=%s" % d["done"]); '
        'print(d["response"])\''
    )
    create(context, "--use-inference", "--command", command)


@when('I create a task with cynork from the prompt "{prompt}"')
def step_create_prompt(context: Any, prompt: str) -> None:
    create(context, "-p", prompt)


@when("the task is running")
def step_running(context: Any) -> None:
    wait_for(context, {"running"} | TERMINAL, 90)
    assert context.result["status"] == "running", context.result
    # Started means its container exists; give the output a moment to show it.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        logs = api(context, "GET", f"/v1/tasks/{context.task_id}/logs?stream=stdout").json()
        if any("started" in line for line in logs.get("lines", [])):
            return
        time.sleep(0.3)


@when("I cancel the task with cynork")
def step_cancel(context: Any) -> None:
    done = cynork(context, "task", "cancel", context.task_id, "-y")
    assert done.returncode == 0, done.stderr


@then("the task is dispatched to that node")
def step_dispatched(context: Any) -> None:
    node = _the_node(context)
    body = wait_for(context, {"running"} | TERMINAL, 120)
    deadline = time.monotonic() + 30
    while not body["jobs"] or not body["jobs"][0].get("node_id"):
        assert time.monotonic() < deadline, body
        time.sleep(0.3)
        body = result(context)
    assert body["jobs"][0]["node_id"] == node["node_id"], (body, node)


@then('the task completes with stdout containing "{text}"')
def step_completes(context: Any, text: str) -> None:
    body = wait_for(context, TERMINAL, 240)
    assert body["status"] == "completed", body
    assert text in body["stdout"], body


@then("the task completes with a non-empty reply from the model")
def step_prompt_reply(context: Any) -> None:
    body = wait_for(context, TERMINAL, 240)
    assert body["status"] == "completed", body
    assert len(body["stdout"].strip()) > 0, body
    print(f"model reply: {body['stdout'].strip()[:200]}")


@then('cynork task result shows status "{status}"')
def step_cynork_result(context: Any, status: str) -> None:
    done = cynork(context, "task", "result", context.task_id)
    assert done.returncode == 0, done.stderr
    assert f"status={status}" in done.stdout, done.stdout


@then('the task ends with status "{status}" within {n:d} seconds')
def step_ends(context: Any, status: str, n: int) -> None:
    body = wait_for(context, TERMINAL, n)
    assert body["status"] == status, body


@then('the task\'s reason is "{reason}"')
def step_reason(context: Any, reason: str) -> None:
    body = context.result
    reasons = {body.get("reason", "")} | {job.get("reason", "") for job in body["jobs"]}
    assert reason in reasons, body


@then("no container of the task is left running")
def step_no_container(context: Any) -> None:
    deadline = time.monotonic() + 20
    while True:
        listed = subprocess.run(
            ["podman", "ps", "-q", "--filter", f"label=cynode.task_id={context.task_id}"],
            capture_output=True,
            text=True,
            check=False,
        )
        if not listed.stdout.split():
            return
        assert time.monotonic() < deadline, f"still running: {listed.stdout}"
        time.sleep(0.5)


@then('cynork task artifacts list shows "{first}" and "{second}" once they are complete')
def step_artifacts_list(context: Any, first: str, second: str) -> None:
    # --wait: the gateway holds the listing until the upload is sealed (SPEC §2.11).
    waited = cynork(context, "task", "artifacts", "list", context.task_id, "--wait", "120")
    assert waited.returncode == 0, waited.stderr
    assert "not complete" not in waited.stderr, "the artifacts never became complete"
    done = cynork(context, "task", "artifacts", "list", context.task_id)
    assert done.returncode == 0, done.stderr
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    assert rows[0] == ["artifact_id", "name", "content_type", "size_bytes"], rows
    context.artifact_ids = {row[1]: row[0] for row in rows[1:]}
    assert sorted(context.artifact_ids) == sorted([first, second]), rows


@then('cynork task artifacts get saves "{name}" with the sha256 the job printed')
def step_artifacts_get(context: Any, name: str) -> None:
    target = context.home / "downloads" / name
    done = cynork(
        context, "task", "artifacts", "get", context.task_id, context.artifact_ids[name],
        "--out", str(target),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"saved=true path={target}", done.stdout
    printed = context.result["stdout"].split()[0]
    assert hashlib.sha256(target.read_bytes()).hexdigest() == printed


@then("cynork task artifacts get --all saves both files under one directory")
def step_artifacts_get_all(context: Any) -> None:
    out = context.home / "all-artifacts"
    done = cynork(context, "task", "artifacts", "get", context.task_id, "--all", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert (out / "sub" / "hi.txt").read_text() == "hello\n"
    assert (out / "data.bin").stat().st_size == 3_000_000


# -- chat through the gateway (chat_through_the_gateway.feature) -------------------

CHAT_MODEL = "smollm2:135m"


@then("cynork models list shows the node's model")
def step_models(context: Any) -> None:
    # The link opens right after the node's dispatch stream; allow it a moment.
    deadline = time.monotonic() + 60
    while True:
        done = cynork(context, "models", "list")
        if done.returncode == 0 and f"model={CHAT_MODEL}" in done.stdout:
            return
        assert time.monotonic() < deadline, done.stdout + done.stderr
        time.sleep(0.5)


@when('I ask with cynork chat "{question}"')
def step_ask(context: Any, question: str) -> None:
    context.question = question
    done = cynork(context, "chat", "--model", CHAT_MODEL, "--plain", "-m", question)
    assert done.returncode == 0, done.stderr
    context.answer = done.stdout


@then("the answer is not empty")
def step_answer(context: Any) -> None:
    assert context.answer.strip(), repr(context.answer)


@then("the answer as JSON is a chat completion with usage")
def step_json(context: Any) -> None:
    done = cynork(context, "chat", "--model", CHAT_MODEL, "-m", context.question, "-o", "json")
    assert done.returncode == 0, done.stderr
    completion = json.loads(done.stdout)
    assert completion["object"] == "chat.completion", completion
    assert completion["choices"][0]["message"]["content"], completion
    assert completion["usage"]["completion_tokens"] > 0, completion


@then("my token usage for the model is recorded")
def step_usage(context: Any) -> None:
    deadline = time.monotonic() + 10
    while True:
        rows = api(context, "GET", "/v1/inference/usage").json()["data"]
        if rows and rows[0]["requests"] >= 2:
            break
        assert time.monotonic() < deadline, rows
        time.sleep(0.2)
    assert rows[0]["model"] == CHAT_MODEL and rows[0]["completion_tokens"] > 0, rows
