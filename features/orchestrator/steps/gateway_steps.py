# behave ships no type hints, so its decorators are untyped.
# mypy: disable-error-code="untyped-decorator"
"""Steps for the user gateway: health, auth and tasks, over plain httpx, a generated
gRPC stub, and curl. Regex matcher for this file only (reset at the end)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import grpc
import httpx
from behave import given, then, use_step_matcher, when

from cynode.gateway.v1 import auth_pb2, auth_pb2_grpc, tasks_pb2, tasks_pb2_grpc
from cynode.testing import BIN

use_step_matcher("re")


def _http(context: Any) -> httpx.Client:
    return httpx.Client(base_url=context.rest_url, timeout=30)


def _auth(context: Any) -> dict[str, str]:
    token = getattr(context, "access_token", None)
    return {"Authorization": f"Bearer {token}"} if token else {}


def _request(context: Any, method: str, path: str, **kw: Any) -> httpx.Response:
    with _http(context) as client:
        resp = client.request(method, path, **kw)
    context.response = resp
    return resp


def _json_field(context: Any, dotted: str) -> Any:
    value: Any = context.response.json()
    for part in dotted.split("."):
        value = value[part]
    return value


def _login(context: Any, handle: str, password: str) -> httpx.Response:
    resp = _request(
        context, "POST", "/v1/auth/login", json={"handle": handle, "password": password}
    )
    if resp.status_code == 200:
        context.access_token = resp.json()["access_token"]
        context.refresh_token = resp.json()["refresh_token"]
    return resp


# --- servers and plain requests -------------------------------------------------------


@given(r'a second orchestrator with (?P<name>[A-Z_]+) set to "(?P<value>[^"]*)"')
def step_second_orchestrator(context: Any, name: str, value: str) -> None:
    orch = context.start_orchestrator({name: value})
    context.rest_url = orch.gateway_url
    context.grpc_target = orch.gateway_grpc


@when(r'I GET "(?P<path>[^"]+)" with my token')
def step_get_with_token(context: Any, path: str) -> None:
    _request(context, "GET", path, headers=_auth(context))


@when(r'I GET "(?P<path>[^"]+)"')
def step_get(context: Any, path: str) -> None:
    _request(context, "GET", path)


@when(r'I run "cynode-orchestrator serve" without ADMIN_PASSWORD')
def step_serve_without_password(context: Any) -> None:
    env = {k: v for k, v in context.orchestrator_env.items() if k != "ADMIN_PASSWORD"}
    context.completed = subprocess.run(
        context.orchestrator.argv(),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@then(r"the command exits with (?P<code>\d+)")
def step_exit_code(context: Any, code: str) -> None:
    assert context.completed.returncode == int(code), context.completed


@then(r'its error output contains "(?P<text>[^"]+)"')
def step_stderr_contains(context: Any, text: str) -> None:
    assert text in context.completed.stderr, context.completed.stderr


@then(r"the response status is (?P<status>\d+)")
def step_status(context: Any, status: str) -> None:
    resp = context.response
    assert resp.status_code == int(status), f"{resp.status_code}: {resp.text[:500]}"


@then(r'the response text is "(?P<text>[^"]*)"')
def step_text_is(context: Any, text: str) -> None:
    assert context.response.text == text, context.response.text


@then(r'the response text contains "(?P<text>[^"]*)"')
def step_text_contains(context: Any, text: str) -> None:
    assert text in context.response.text, context.response.text


@then(r'the response text does not contain "(?P<text>[^"]*)"')
def step_text_not_contains(context: Any, text: str) -> None:
    assert text not in context.response.text, context.response.text


@then(r'the response text starts with "(?P<text>[^"]*)"')
def step_text_starts(context: Any, text: str) -> None:
    assert context.response.text.startswith(text), context.response.text


@then(r"the response is problem JSON")
def step_problem(context: Any) -> None:
    resp = context.response
    assert resp.headers["content-type"].startswith("application/problem+json"), resp.headers
    body = resp.json()
    assert body["status"] == resp.status_code and body["type"] and body["title"], body


@then(r"the response has a Retry-After header")
def step_retry_after(context: Any) -> None:
    assert int(context.response.headers["retry-after"]) >= 1


@then(r'the JSON field "(?P<field>[^"]+)" is (?P<value>.+)')
def step_json_field(context: Any, field: str, value: str) -> None:
    expected = json.loads(value)
    got = _json_field(context, field)
    assert got == expected, f"{field}: {got!r} != {expected!r}"


@then(r"I remember the response body")
def step_remember(context: Any) -> None:
    context.remembered = context.response.json()


@then(r"the response body is the one I remembered")
def step_same_body(context: Any) -> None:
    assert context.response.json() == context.remembered


# --- auth ------------------------------------------------------------------------------


@given(r'a user "(?P<handle>[^"]+)" with password "(?P<password>[^"]+)"')
def step_user(context: Any, handle: str, password: str) -> None:
    """Created with the real CLI against the same database (an existing user is fine)."""
    done = subprocess.run(
        [str(BIN / "cynode-orchestrator"), "user", "create", handle, "--password-stdin"],
        input=password + "\n",
        env=context.orchestrator_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 or "already exists" in done.stderr, done.stderr


@when(r'I log in as "(?P<handle>[^"]+)" with the admin password')
def step_login_admin(context: Any, handle: str) -> None:
    _login(context, handle, context.admin_password)


@given(r'I am logged in as "admin"')
def step_logged_in_admin(context: Any) -> None:
    assert _login(context, "admin", context.admin_password).status_code == 200


@given(r'I am logged in as "(?P<handle>[^"]+)" with password "(?P<password>[^"]+)"')
def step_logged_in(context: Any, handle: str, password: str) -> None:
    assert _login(context, handle, password).status_code == 200, context.response.text


@when(r'I log in as "(?P<handle>[^"]+)" with password "(?P<password>[^"]+)" (?P<n>\d+) times')
def step_login_n(context: Any, handle: str, password: str, n: str) -> None:
    for _ in range(int(n)):
        _login(context, handle, password)


@when(r'I log in as "(?P<handle>[^"]+)" with password "(?P<password>[^"]+)"')
def step_login(context: Any, handle: str, password: str) -> None:
    _login(context, handle, password)


@when(r"I ask who I am")
def step_whoami(context: Any) -> None:
    _request(context, "GET", "/v1/users/me", headers=_auth(context))


@when(r"I refresh the tokens")
def step_refresh(context: Any) -> None:
    context.previous_refresh = context.refresh_token
    resp = _request(
        context, "POST", "/v1/auth/refresh", json={"refresh_token": context.refresh_token}
    )
    if resp.status_code == 200:
        context.access_token = resp.json()["access_token"]
        context.refresh_token = resp.json()["refresh_token"]


@when(r"I refresh with the previous refresh token")
def step_refresh_old(context: Any) -> None:
    _request(context, "POST", "/v1/auth/refresh", json={"refresh_token": context.previous_refresh})


@then(r"the refresh token changed")
def step_refresh_changed(context: Any) -> None:
    assert context.refresh_token != context.previous_refresh


@when(r"I log out")
def step_logout(context: Any) -> None:
    _request(context, "POST", "/v1/auth/logout", json={"refresh_token": context.refresh_token})


# --- tasks -----------------------------------------------------------------------------


def _create(context: Any, body: Any) -> httpx.Response:
    resp = _request(context, "POST", "/v1/tasks", json=body, headers=_auth(context))
    if resp.status_code == 201:
        context.task_id = resp.json()["task_id"]
        context.created = [*getattr(context, "created", []), context.task_id]
    return resp


@when(r"I create a task with body:?")
def step_create_body(context: Any) -> None:
    _create(context, json.loads(context.text))


@when(r"I create a task with a prompt of (?P<size>\d+) bytes")
def step_create_big(context: Any, size: str) -> None:
    _create(context, {"prompt": "x" * int(size)})


@when(r"I create (?P<n>\d+) prompt tasks")
def step_create_n(context: Any, n: str) -> None:
    context.created = []
    for i in range(int(n)):
        assert _create(context, {"prompt": f"task {i}"}).status_code == 201


@when(r"I get the task")
def step_get_task(context: Any) -> None:
    _request(context, "GET", f"/v1/tasks/{context.task_id}", headers=_auth(context))


@then(r"the response is the task object itself")
def step_bare_task(context: Any) -> None:
    """SPEC §2: GET /v1/tasks/{id} answers {task_id, status, ...}, not {"task": {...}}."""
    assert context.response.status_code == 200, context.response.text
    body = context.response.json()
    assert "task" not in body and body["task_id"] == context.task_id, body
    assert body["created_at"].endswith("Z") and body["updated_at"].endswith("Z"), body


@when(r"I cancel the task")
def step_cancel(context: Any) -> None:
    _request(
        context, "POST", f"/v1/tasks/{context.task_id}/cancel", json={}, headers=_auth(context)
    )


@when(r"I list tasks with limit (?P<limit>\d+)")
def step_list(context: Any, limit: str) -> None:
    _request(context, "GET", "/v1/tasks", params={"limit": limit}, headers=_auth(context))


@then(r"the list holds (?P<n>\d+) tasks, the newest first")
def step_list_holds(context: Any, n: str) -> None:
    ids = [t["task_id"] for t in context.response.json()["tasks"]]
    assert ids == list(reversed(context.created))[: int(n)], (ids, context.created)


@then(r"the list has a next cursor")
def step_next_cursor(context: Any) -> None:
    cursor = context.response.json()["next_cursor"]
    assert cursor
    nxt = _request(
        context, "GET", "/v1/tasks", params={"limit": 2, "cursor": cursor}, headers=_auth(context)
    )
    assert nxt.status_code == 200 and context.created[0] in [
        t["task_id"] for t in nxt.json()["tasks"]
    ]


# --- gRPC and curl ---------------------------------------------------------------------


def _grpc_auth(context: Any) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {context.access_token}"),)


def _grpc_call(context: Any, service: str, method: str, request: Any, authed: bool = True) -> Any:
    """One unary call through the generated stub of `service` ("auth" or "tasks")."""
    stubs = {"auth": auth_pb2_grpc.AuthServiceStub, "tasks": tasks_pb2_grpc.TaskServiceStub}
    with grpc.insecure_channel(context.grpc_target) as channel:
        stub = stubs[service](channel)  # type: ignore[no-untyped-call]
        metadata = _grpc_auth(context) if authed else ()
        return getattr(stub, method)(request, metadata=metadata)


def _grpc_error(context: Any, call: Any) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    raise AssertionError("the gRPC call succeeded")


@when(r'I log in over gRPC as "(?P<handle>[^"]+)" with the admin password')
def step_grpc_login(context: Any, handle: str) -> None:
    request = auth_pb2.LoginRequest(handle=handle, password=context.admin_password)
    pair = _grpc_call(context, "auth", "Login", request, authed=False)
    assert pair.token_type == "Bearer" and pair.expires_in > 0
    context.access_token, context.refresh_token = pair.access_token, pair.refresh_token


@when(r"I refresh the tokens over gRPC")
def step_grpc_refresh(context: Any) -> None:
    request = auth_pb2.RefreshRequest(refresh_token=context.refresh_token)
    pair = _grpc_call(context, "auth", "Refresh", request, authed=False)
    assert pair.refresh_token != context.refresh_token
    context.previous_refresh_token = context.refresh_token
    context.access_token, context.refresh_token = pair.access_token, pair.refresh_token


@then(r'over gRPC I am "(?P<handle>[^"]+)"')
def step_grpc_whoami(context: Any, handle: str) -> None:
    me = _grpc_call(context, "auth", "GetCurrentUser", auth_pb2.GetCurrentUserRequest())
    assert me.handle == handle and me.is_active and me.id


@then(r"over gRPC the previous refresh token is refused")
def step_grpc_reuse(context: Any) -> None:
    request = auth_pb2.RefreshRequest(refresh_token=context.previous_refresh_token)
    code = _grpc_error(context, lambda: _grpc_call(context, "auth", "Refresh", request, False))
    assert code == grpc.StatusCode.UNAUTHENTICATED, code


@then(r"the task is in my task list over gRPC")
def step_grpc_list(context: Any) -> None:
    page = _grpc_call(context, "tasks", "ListTasks", tasks_pb2.ListTasksRequest(limit=200))
    assert context.grpc_created.task_id in [t.task_id for t in page.tasks]


@when(r"I cancel the task over gRPC")
def step_grpc_cancel(context: Any) -> None:
    request = tasks_pb2.CancelTaskRequest(task_id=context.grpc_created.task_id)
    answer = _grpc_call(context, "tasks", "CancelTask", request)
    assert answer.canceled and answer.task_id == context.grpc_created.task_id


@then(r"cancelling it again over gRPC is refused with (?P<code>[A-Z_]+)")
def step_grpc_cancel_again(context: Any, code: str) -> None:
    request = tasks_pb2.CancelTaskRequest(task_id=context.grpc_created.task_id)
    got = _grpc_error(context, lambda: _grpc_call(context, "tasks", "CancelTask", request))
    assert got == getattr(grpc.StatusCode, code), got


@when(r"I log out over gRPC")
def step_grpc_logout(context: Any) -> None:
    request = auth_pb2.LogoutRequest(refresh_token=context.refresh_token)
    _grpc_call(context, "auth", "Logout", request, authed=False)


@then(r"over gRPC my access token is refused")
def step_grpc_refused(context: Any) -> None:
    request = auth_pb2.GetCurrentUserRequest()
    code = _grpc_error(context, lambda: _grpc_call(context, "auth", "GetCurrentUser", request))
    assert code == grpc.StatusCode.UNAUTHENTICATED, code


@when(r"I create a commands task over gRPC")
def step_grpc_create(context: Any) -> None:
    request = tasks_pb2.CreateTaskRequest(input_mode="commands", commands=["echo grpc"])
    context.grpc_created = _grpc_call(context, "tasks", "CreateTask", request)


@then(r'the gRPC task status is "(?P<status>[^"]+)"')
def step_grpc_status(context: Any, status: str) -> None:
    assert context.grpc_created.status == status


@then(r"I can read the task back over gRPC")
def step_grpc_get(context: Any) -> None:
    task_id = context.grpc_created.task_id
    # FetchTask answers the Task itself; GetTask (kept for older stubs) wraps it.
    fetched = _grpc_call(context, "tasks", "FetchTask", tasks_pb2.FetchTaskRequest(task_id=task_id))
    wrapped = _grpc_call(context, "tasks", "GetTask", tasks_pb2.GetTaskRequest(task_id=task_id))
    assert fetched.input_mode == "commands" and fetched.task_id == task_id
    assert wrapped.task == fetched
    # And the REST side sees the same task, as the object itself (SPEC §2).
    _request(context, "GET", f"/v1/tasks/{task_id}", headers=_auth(context))
    body = context.response.json()
    assert "task" not in body, body
    assert body["task_id"] == task_id and body["input_mode"] == "commands"


def _curl(context: Any, *args: str) -> None:
    done = subprocess.run(
        ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    body, _, code = done.stdout.rpartition("\n")
    context.curl_status, context.curl_body = int(code), body


@when(r"I create a prompt task with curl")
def step_curl_create(context: Any) -> None:
    _curl(
        context,
        "-X",
        "POST",
        "-H",
        f"Authorization: Bearer {context.access_token}",
        "-H",
        "Content-Type: application/json",
        "--data",
        '{"prompt": "hello from curl"}',
        f"{context.rest_url}/v1/tasks",
    )
    context.task_id = json.loads(context.curl_body)["task_id"]


@when(r"I get the task with curl")
def step_curl_get(context: Any) -> None:
    _curl(
        context,
        "-H",
        f"Authorization: Bearer {context.access_token}",
        f"{context.rest_url}/v1/tasks/{context.task_id}",
    )
    body = json.loads(context.curl_body)
    assert "task" not in body and body["task_id"] == context.task_id, body


def _curl_json(context: Any, method: str, path: str, body: Any, token: bool = False) -> None:
    headers = ["-H", f"Authorization: Bearer {context.access_token}"] if token else []
    _curl(
        context,
        "-X",
        method,
        *headers,
        "-H",
        "Content-Type: application/json",
        "--data",
        json.dumps(body),
        f"{context.rest_url}{path}",
    )


def _curl_tokens(context: Any) -> None:
    if context.curl_status == 200:
        pair = json.loads(context.curl_body)
        assert pair["token_type"] == "Bearer"
        context.access_token, context.refresh_token = pair["access_token"], pair["refresh_token"]


@when(r'I log in with curl as "(?P<handle>[^"]+)" with the admin password')
def step_curl_login(context: Any, handle: str) -> None:
    body = {"handle": handle, "password": context.admin_password}
    _curl_json(context, "POST", "/v1/auth/login", body)
    _curl_tokens(context)


@when(r"I refresh the tokens with curl")
def step_curl_refresh(context: Any) -> None:
    _curl_json(context, "POST", "/v1/auth/refresh", {"refresh_token": context.refresh_token})
    _curl_tokens(context)


@when(r"I ask who I am with curl")
def step_curl_whoami(context: Any) -> None:
    auth = f"Authorization: Bearer {context.access_token}"
    _curl(context, "-H", auth, f"{context.rest_url}/v1/users/me")


@then(r'curl printed the JSON field "(?P<field>[^"]+)" as "(?P<value>[^"]*)"')
def step_curl_field(context: Any, field: str, value: str) -> None:
    assert json.loads(context.curl_body)[field] == value, context.curl_body


@when(r"I list my tasks with curl")
def step_curl_list(context: Any) -> None:
    auth = f"Authorization: Bearer {context.access_token}"
    _curl(context, "-H", auth, f"{context.rest_url}/v1/tasks?limit=200")


@then(r"curl's task list holds the task")
def step_curl_list_holds(context: Any) -> None:
    page = json.loads(context.curl_body)
    assert context.task_id in [t["task_id"] for t in page["tasks"]]
    assert "next_cursor" in page


@when(r"I cancel the task with curl")
def step_curl_cancel(context: Any) -> None:
    _curl_json(context, "POST", f"/v1/tasks/{context.task_id}/cancel", {}, token=True)


@then(r"curl printed problem JSON")
def step_curl_problem(context: Any) -> None:
    problem = json.loads(context.curl_body)
    assert problem["status"] == context.curl_status and problem["type"].startswith("urn:")
    assert problem["title"] and problem["detail"]


@when(r"I log out with curl")
def step_curl_logout(context: Any) -> None:
    _curl_json(context, "POST", "/v1/auth/logout", {"refresh_token": context.refresh_token})


@then(r"curl printed HTTP status (?P<status>\d+)")
def step_curl_status(context: Any, status: str) -> None:
    assert context.curl_status == int(status), (context.curl_status, context.curl_body)


use_step_matcher("parse")
