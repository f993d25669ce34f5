"""One table of REST requests, sent through both doors: the Python shim and a real Envoy.

Every annotated route appears (checked against the descriptors). For each row the shim
must answer the expected status; Envoy must answer the same status, content type and
JSON body, except where DIFFERENCES (mirrored in docs/envoy-parity.md) says otherwise.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from google.api import annotations_pb2  # type: ignore[import-untyped]
from google.protobuf import descriptor_pb2
from ulid import ULID

from tests.contract.stack import ROOT, Stack

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.podman]

# Every way Envoy's answer may differ from the shim's; docs/envoy-parity.md explains each.
DIFFERENCES: dict[str, str] = {
    "success-status": (
        "201 (CreateTask, CreateUser) and 204 (Logout) from x-http-status are 200 on Envoy"
    ),
    "no-content-body": "Logout: the shim sends no body with 204, Envoy sends {} with 200",
    "wrong-method": "a known path with a wrong method is 405 (+Allow) on the shim, 404 on Envoy",
    "request-detail": "errors found before the servicer runs keep type/title/status, not detail",
}


@dataclass
class World:
    """What the rows refer to, set up once through the shim."""

    stack: Stack
    token: str
    done_id: str = ""
    node_jwt: str = ""
    config_version: str = ""


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: Any = None
    raw: bytes | None = None
    token: str | None = None
    control: bool = False


@dataclass(frozen=True)
class Row:
    name: str
    rpc: str
    status: int
    make: Callable[[World, str], Call]
    volatile: frozenset[str] = frozenset()
    differences: frozenset[str] = field(default_factory=frozenset)
    stream: bool = False


def _login(world: World, base: str) -> dict[str, Any]:
    password = world.stack.admin_password
    response = httpx.post(f"{base}/v1/auth/login", json={"handle": "admin", "password": password})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _create(world: World, base: str, commands: list[str]) -> str:
    response = httpx.post(
        f"{base}/v1/tasks",
        json={"input_mode": "commands", "commands": commands},
        headers={"authorization": f"Bearer {world.token}"},
    )
    assert response.status_code in (200, 201), response.text
    task_id: str = response.json()["task_id"]
    return task_id


def _capability(slug: str) -> dict[str, Any]:
    return {
        "version": 1,
        "node": {"node_slug": slug},
        "platform": {"os": "linux", "arch": "amd64"},
        "container_runtime": {"runtime": "podman", "version": "4.3"},
        "compute": {"cpu_cores": 2, "ram_mb": 2048},
        "sandbox": {"supported": True, "max_concurrency": 0},
        "inference": {"supported": False, "mode": "none"},
    }


def _user(method: str, path: str, body: Any = None, auth: str = "admin") -> Callable[..., Call]:
    def make(world: World, _base: str) -> Call:
        token = {"admin": world.token, "none": None, "bad": world.token[:-4] + "AAAA"}[auth]
        return Call(method, path.format(done=world.done_id), body, token=token)

    return make


def _node(method: str, path: str, body: Any = None, auth: bool = True) -> Callable[..., Call]:
    def make(world: World, _base: str) -> Call:
        text = json.dumps(body).replace("{config_version}", world.config_version)
        token = world.node_jwt if auth else None
        return Call(method, path, json.loads(text), token=token, control=True)

    return make


def _raw(method: str, path: str, raw: bytes) -> Callable[..., Call]:
    def make(world: World, _base: str) -> Call:
        return Call(method, path, raw=raw, token=world.token)

    return make


def _refresh(world: World, base: str) -> Call:
    token = _login(world, base)["refresh_token"]
    return Call("POST", "/v1/auth/refresh", {"refresh_token": token})


def _logout(world: World, base: str) -> Call:
    fresh = _login(world, base)
    return Call("POST", "/v1/auth/logout", {"refresh_token": fresh["refresh_token"]})


def _cancel_fresh(world: World, base: str) -> Call:
    task_id = _create(world, base, ["sleep 30"])
    return Call("POST", f"/v1/tasks/{task_id}/cancel", {}, token=world.token)


def _delete_live(world: World, base: str) -> Call:
    task_id = _create(world, base, ["sleep 30"])
    return Call("DELETE", f"/v1/tasks/{task_id}", token=world.token)


BIG_PROMPT = {"input_mode": "prompt", "prompt": "x" * (1024 * 1024 + 1)}
MIB = 1024 * 1024


def _with_attachment(size: int) -> dict[str, Any]:
    """A commands task with one attachment of `size` bytes (SPEC §2 allows 10 MiB)."""
    content = base64.b64encode(bytes(size)).decode()
    attachment = {"name": "blob.bin", "content": content}
    return {"input_mode": "commands", "commands": ["true"], "attachments": [attachment]}


AUTH = "cynode.gateway.v1.AuthService/"
TASKS = "cynode.gateway.v1.TaskService/"
NODES = "cynode.controlplane.v1.NodeService/"
ADMIN = "cynode.gateway.v1.NodeAdminService/"
USERS = "cynode.gateway.v1.UserService/"


def _new_user(world: World, _base: str) -> Call:
    """A fresh handle through each door (both doors share one database)."""
    body = {"handle": f"parity-{ULID()}".lower(), "password": "parity password 1"}
    return Call("POST", "/v1/users", body, token=world.token)


USER_VOLATILE = frozenset({"id", "handle", "created_at", "user_id", "usage"})


def _login_call(password: str | None, extra: dict[str, Any] | None = None) -> Callable[..., Call]:
    def make(world: World, _base: str) -> Call:
        body = {"handle": "admin", "password": password or world.stack.admin_password}
        return Call("POST", "/v1/auth/login", {**body, **(extra or {})})

    return make


TOKENS = frozenset({"access_token", "refresh_token"})
REQUEST_DETAIL = frozenset({"request-detail"})

ROWS: list[Row] = [
    # Reads first: the node is idle, so both doors see the same state.
    Row("me", AUTH + "GetCurrentUser", 200, _user("GET", "/v1/users/me")),
    Row("me-no-token", AUTH + "GetCurrentUser", 401, _user("GET", "/v1/users/me", auth="none")),
    Row("me-bad-token", AUTH + "GetCurrentUser", 401, _user("GET", "/v1/users/me", auth="bad")),
    Row("get", TASKS + "FetchTask", 200, _user("GET", "/v1/tasks/{done}")),
    Row("get-by-name", TASKS + "FetchTask", 200, _user("GET", "/v1/tasks/parity-done")),
    Row("get-missing", TASKS + "FetchTask", 404, _user("GET", "/v1/tasks/nope")),
    Row("get-no-token", TASKS + "FetchTask", 401, _user("GET", "/v1/tasks/{done}", auth="none")),
    Row("list", TASKS + "ListTasks", 200, _user("GET", "/v1/tasks?status=completed&limit=5")),
    Row("list-unknown-param", TASKS + "ListTasks", 200, _user("GET", "/v1/tasks?limit=1&x=y")),
    Row(
        "list-bad-limit",
        TASKS + "ListTasks",
        400,
        _user("GET", "/v1/tasks?limit=abc"),
        differences=REQUEST_DETAIL,
    ),
    Row("result", TASKS + "GetTaskResult", 200, _user("GET", "/v1/tasks/{done}/result")),
    Row("result-missing", TASKS + "GetTaskResult", 404, _user("GET", "/v1/tasks/nope/result")),
    Row("logs", TASKS + "GetTaskLogs", 200, _user("GET", "/v1/tasks/{done}/logs?stream=stdout")),
    Row(
        "logs-stderr",
        TASKS + "GetTaskLogs",
        200,
        _user("GET", "/v1/tasks/{done}/logs?stream=stderr"),
    ),
    Row("logs-all", TASKS + "GetTaskLogs", 200, _user("GET", "/v1/tasks/{done}/logs?stream=all")),
    Row("logs-missing", TASKS + "GetTaskLogs", 404, _user("GET", "/v1/tasks/nope/logs")),
    Row(
        "watch-done", TASKS + "WatchTask", 200, _user("GET", "/v1/tasks/{done}/watch"), stream=True
    ),
    Row(
        "watch-done-with-result",
        TASKS + "WatchTask",
        200,
        _user("GET", "/v1/tasks/{done}/watch?include_result=true"),
        stream=True,
    ),
    Row("watch-missing", TASKS + "WatchTask", 404, _user("GET", "/v1/tasks/nope/watch")),
    Row(
        "watch-no-token",
        TASKS + "WatchTask",
        401,
        _user("GET", "/v1/tasks/{done}/watch", auth="none"),
    ),
    Row("cancel-terminal", TASKS + "CancelTask", 409, _user("POST", "/v1/tasks/{done}/cancel", {})),
    Row("cancel-missing", TASKS + "CancelTask", 404, _user("POST", "/v1/tasks/nope/cancel", {})),
    Row("artifacts", TASKS + "ListTaskArtifacts", 200, _user("GET", "/v1/tasks/{done}/artifacts")),
    Row(
        "artifacts-missing",
        TASKS + "ListTaskArtifacts",
        404,
        _user("GET", "/v1/tasks/nope/artifacts"),
    ),
    Row("delete-missing", TASKS + "DeleteTask", 404, _user("DELETE", "/v1/tasks/nope")),
    # The detail names the status (queued or running): whichever the node made it by then.
    Row("delete-live", TASKS + "DeleteTask", 409, _delete_live, volatile=frozenset({"detail"})),
    Row(
        "nodes",
        ADMIN + "ListNodes",
        200,
        _user("GET", "/v1/nodes"),
        volatile=frozenset({"last_heartbeat_at", "running_jobs"}),
    ),
    Row("nodes-no-token", ADMIN + "ListNodes", 401, _user("GET", "/v1/nodes", auth="none")),
    Row(
        "nodes-get",
        ADMIN + "GetNode",
        200,
        _user("GET", "/v1/nodes/parity-node"),
        volatile=frozenset({"last_heartbeat_at", "running_jobs"}),
    ),
    Row("nodes-get-missing", ADMIN + "GetNode", 404, _user("GET", "/v1/nodes/nope")),
    Row("nodes-drain", ADMIN + "DrainNode", 200, _user("POST", "/v1/nodes/parity-node/drain", {})),
    Row(
        "nodes-enable", ADMIN + "EnableNode", 200, _user("POST", "/v1/nodes/parity-node/enable", {})
    ),
    Row(
        "nodes-disable-missing",
        ADMIN + "DisableNode",
        404,
        _user("POST", "/v1/nodes/nope/disable", {}),
    ),
    Row(
        "nodes-refresh-config",
        ADMIN + "RefreshNodeConfig",
        200,
        _user("POST", "/v1/nodes/parity-node/refresh_config", {}),
        volatile=frozenset({"config_version"}),
    ),
    # Users (admin).
    Row(
        "users-create",
        USERS + "CreateUser",
        201,
        _new_user,
        volatile=USER_VOLATILE,
        differences=frozenset({"success-status"}),
    ),
    Row(
        "users-create-bad",
        USERS + "CreateUser",
        400,
        _user("POST", "/v1/users", {"handle": "-bad", "password": "parity password 1"}),
    ),
    Row(
        "users-list",
        USERS + "ListUsers",
        200,
        _user("GET", "/v1/users?limit=1"),
        volatile=frozenset({"usage"}),
    ),
    Row("users-get", USERS + "GetUser", 200, _user("GET", "/v1/users/admin"), USER_VOLATILE),
    Row("users-get-missing", USERS + "GetUser", 404, _user("GET", "/v1/users/nobody")),
    Row("users-get-no-token", USERS + "GetUser", 401, _user("GET", "/v1/users/x", auth="none")),
    Row(
        "users-update",
        USERS + "UpdateUser",
        200,
        _user("PATCH", "/v1/users/admin", {"weight": 1}),
        USER_VOLATILE,
    ),
    Row(
        "users-update-bad",
        USERS + "UpdateUser",
        400,
        _user("PATCH", "/v1/users/admin", {"weight": -1}),
    ),
    Row(
        "users-disable-self",
        USERS + "DisableUser",
        400,
        _user("POST", "/v1/users/admin/disable", {}),
    ),
    Row("users-enable", USERS + "EnableUser", 200, _user("POST", "/v1/users/admin/enable", {})),
    Row(
        "users-reset-missing",
        USERS + "ResetPassword",
        404,
        _user("POST", "/v1/users/nobody/reset_password", {"password": "parity password 2"}),
    ),
    Row(
        "users-revoke-missing",
        USERS + "RevokeSessions",
        404,
        _user("POST", "/v1/users/nobody/revoke_sessions", {}),
    ),
    # Audit (admin).
    Row(
        "audit",
        "cynode.gateway.v1.AuditService/ListAuditEvents",
        200,
        _user("GET", "/v1/audit?action=user_create&outcome=ok&limit=2"),
    ),
    Row(
        "audit-bad-cursor",
        "cynode.gateway.v1.AuditService/ListAuditEvents",
        400,
        _user("GET", "/v1/audit?cursor=nope"),
    ),
    # Auth.
    Row("login", AUTH + "Login", 200, _login_call(None), volatile=TOKENS),
    Row("login-wrong", AUTH + "Login", 401, _login_call("wrong-password")),
    Row("login-unknown-field", AUTH + "Login", 401, _login_call("wrong", {"otp": "1"})),
    Row(
        "login-not-json",
        AUTH + "Login",
        400,
        _raw("POST", "/v1/auth/login", b"{nope"),
        differences=REQUEST_DETAIL,
    ),
    Row(
        "login-not-object",
        AUTH + "Login",
        400,
        _raw("POST", "/v1/auth/login", b"[1]"),
        differences=REQUEST_DETAIL,
    ),
    Row("refresh", AUTH + "Refresh", 200, _refresh, volatile=TOKENS),
    Row(
        "refresh-bad",
        AUTH + "Refresh",
        401,
        _user("POST", "/v1/auth/refresh", {"refresh_token": "x"}),
    ),
    Row(
        "logout",
        AUTH + "Logout",
        204,
        _logout,
        differences=frozenset({"success-status", "no-content-body"}),
    ),
    Row(
        "logout-bad", AUTH + "Logout", 401, _user("POST", "/v1/auth/logout", {"refresh_token": "x"})
    ),
    # Routing.
    Row("no-route", "", 404, _user("GET", "/v1/nothing"), differences=REQUEST_DETAIL),
    Row(
        "wrong-method",
        "",
        405,
        _user("DELETE", "/v1/tasks"),
        differences=frozenset({"wrong-method", "request-detail"}),
    ),
    # Control plane.
    Row(
        "register-bad-psk",
        NODES + "RegisterNode",
        401,
        _node(
            "POST",
            "/v1/nodes/register",
            {"psk": "no", "capability": _capability("parity-node")},
            auth=False,
        ),
    ),
    Row("config", NODES + "GetNodeConfig", 200, _node("GET", "/v1/nodes/config")),
    Row(
        "config-no-token",
        NODES + "GetNodeConfig",
        401,
        _node("GET", "/v1/nodes/config", auth=False),
    ),
    Row(
        "capability",
        NODES + "ReportCapability",
        200,
        _node("POST", "/v1/nodes/capability", {"capability": _capability("parity-node")}),
    ),
    Row(
        "capability-as-the-body",
        NODES + "ReportCapability",
        200,
        _node("POST", "/v1/nodes/capability", _capability("parity-node")),
    ),
    Row(
        "capability-neither-form",
        NODES + "ReportCapability",
        400,
        _node("POST", "/v1/nodes/capability", {"capabilities": {"cpu": 1}}),
    ),
    Row(
        "capability-both-forms",
        NODES + "ReportCapability",
        400,
        _node(
            "POST",
            "/v1/nodes/capability",
            {"capability": _capability("parity-node"), "version": 1},
        ),
    ),
    Row(
        "capability-other-slug",
        NODES + "ReportCapability",
        403,
        _node("POST", "/v1/nodes/capability", {"capability": _capability("someone-else")}),
    ),
    Row(
        "ack",
        NODES + "AckNodeConfig",
        200,
        _node(
            "POST",
            "/v1/nodes/config",
            {
                "version": 1,
                "node_slug": "parity-node",
                "config_version": "{config_version}",
                "status": "applied",
            },
        ),
    ),
    Row(
        "ack-bad-status",
        NODES + "AckNodeConfig",
        400,
        _node(
            "POST", "/v1/nodes/config", {"config_version": "{config_version}", "status": "maybe"}
        ),
    ),
    Row(
        "ack-unknown-version",
        NODES + "AckNodeConfig",
        404,
        _node(
            "POST",
            "/v1/nodes/config",
            {"config_version": "01AAAAAAAAAAAAAAAAAAAAAAAA", "status": "applied"},
        ),
    ),
    # Writes last: the tasks they create run on the node.
    Row(
        "create",
        TASKS + "CreateTask",
        201,
        _user("POST", "/v1/tasks", {"input_mode": "commands", "commands": ["true"]}),
        volatile=frozenset({"task_id"}),
        differences=frozenset({"success-status"}),
    ),
    Row(
        "create-two-modes",
        TASKS + "CreateTask",
        400,
        _user("POST", "/v1/tasks", {"prompt": "a", "commands": ["b"]}),
    ),
    Row("create-too-large", TASKS + "CreateTask", 413, _user("POST", "/v1/tasks", BIG_PROMPT)),
    # The largest attachment SPEC allows is 13.3 MiB of base64: both doors take it, and
    # one byte more is the servicer's 413 through both (not a proxy's body cap).
    Row(
        "create-max-attachment",
        TASKS + "CreateTask",
        201,
        _user("POST", "/v1/tasks", _with_attachment(10 * MIB)),
        volatile=frozenset({"task_id"}),
        differences=frozenset({"success-status"}),
    ),
    Row(
        "create-attachment-too-large",
        TASKS + "CreateTask",
        413,
        _user("POST", "/v1/tasks", _with_attachment(10 * MIB + 1)),
    ),
    Row(
        "create-no-token",
        TASKS + "CreateTask",
        401,
        _user("POST", "/v1/tasks", {"prompt": "a"}, auth="none"),
    ),
    Row("cancel", TASKS + "CancelTask", 200, _cancel_fresh, volatile=frozenset({"task_id"})),
    # Plain routes (no RPC): Envoy passes them to the gateway's REST port as they are.
    Row("door-models", "", 200, _user("GET", "/v1/models")),
    Row("door-models-no-token", "", 401, _user("GET", "/v1/models", auth="none")),
    Row("door-usage", "", 200, _user("GET", "/v1/inference/usage")),
    Row("door-chat-bad-json", "", 400, _raw("POST", "/v1/chat/completions", b"{nope")),
    Row(
        "artifact-download-missing",
        "",
        404,
        _user("GET", "/v1/tasks/{done}/artifacts/01ARZ3NDEKTSV4RRFFQ69G5FAV"),
    ),
    Row(
        "artifact-download-no-token",
        "",
        401,
        _user("GET", "/v1/tasks/{done}/artifacts/01ARZ3NDEKTSV4RRFFQ69G5FAV", auth="none"),
    ),
]


def _register(world: World) -> None:
    body = {"psk": world.stack.node_psk, "capability": _capability("parity-node")}
    response = httpx.post(f"{world.stack.control_url}/v1/nodes/register", json=body)
    assert response.status_code == 200, response.text
    world.node_jwt = response.json()["auth"]["node_jwt"]
    world.config_version = response.json()["initial_config_version"]


@pytest.fixture(scope="module")
def world(stack: Stack) -> World:
    world = World(stack, stack.token())
    headers = {"authorization": f"Bearer {world.token}"}
    body = {"input_mode": "commands", "commands": ["echo parity"], "task_name": "parity-done"}
    response = httpx.post(f"{stack.shim_url}/v1/tasks", json=body, headers=headers)
    assert response.status_code == 201, response.text
    world.done_id = response.json()["task_id"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        task = httpx.get(f"{stack.shim_url}/v1/tasks/{world.done_id}", headers=headers).json()
        if task["status"] == "completed":
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"the setup task never completed: {task}")
    _register(world)
    return world


@dataclass
class Answer:
    status: int
    media_type: str
    body: Any


def _send(call: Call, base: str) -> Answer:
    headers = {"authorization": f"Bearer {call.token}"} if call.token else {}
    if call.raw is not None:
        headers["content-type"] = "application/json"
    content = call.raw if call.raw is not None else None
    payload = call.body if call.raw is None and call.body is not None else None
    with httpx.stream(
        call.method, base + call.path, json=payload, content=content, headers=headers, timeout=30
    ) as response:
        text = response.read().decode()
    media = response.headers.get("content-type", "").split(";")[0]
    if media == "application/x-ndjson":
        body: Any = [json.loads(line) for line in text.splitlines() if line]
    else:
        body = json.loads(text) if text else None
    return Answer(response.status_code, media, body)


def _scrub(value: Any, volatile: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {
            k: ("<set>" if k in volatile and v else _scrub(v, volatile)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_scrub(item, volatile) for item in value]
    return value


def _base(stack: Stack, control: bool, envoy: bool) -> str:
    if control:
        return stack.envoy_control_url if envoy else stack.control_url
    return stack.envoy_url if envoy else stack.shim_url


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_both_doors_answer_alike(world: World, row: Row) -> None:
    assert row.differences <= set(DIFFERENCES), row.differences
    answers = []
    for envoy in (False, True):
        call = row.make(world, _base(world.stack, control=False, envoy=envoy))
        answers.append(_send(call, _base(world.stack, call.control, envoy)))
    shim, envoy_answer = answers
    assert shim.status == row.status, shim.body
    expected_status = row.status
    if "success-status" in row.differences or "wrong-method" in row.differences:
        expected_status = 404 if "wrong-method" in row.differences else 200
    assert envoy_answer.status == expected_status, envoy_answer.body
    if "no-content-body" in row.differences:
        assert shim.body is None and envoy_answer.body == {}
        return
    assert envoy_answer.media_type == shim.media_type
    if row.stream:
        assert shim.media_type == "application/x-ndjson" and shim.body, shim.body
        assert shim.body[-1]["terminal"] is True
    left, right = _scrub(shim.body, row.volatile), _scrub(envoy_answer.body, row.volatile)
    if "request-detail" in row.differences:
        assert shim.media_type == "application/problem+json"
        left.pop("detail"), right.pop("detail")
        if "wrong-method" in row.differences:
            assert left["type"].endswith("method-not-allowed")
            assert right["type"].endswith("not-found")
            return
    assert right == left


def test_get_task_is_the_bare_task_through_both_doors(world: World) -> None:
    """SPEC §2: GET /v1/tasks/{id} is the task object itself, through the shim and
    through Envoy alike (the rows above compare the two; this pins the shape)."""
    for base in (world.stack.shim_url, world.stack.envoy_url):
        for key in (world.done_id, "parity-done"):
            call = Call("GET", f"/v1/tasks/{key}", token=world.token)
            answer = _send(call, base)
            assert answer.status == 200 and answer.media_type == "application/json", base
            task = answer.body
            assert "task" not in task, (base, task)
            assert task["task_id"] == world.done_id and task["task_name"] == "parity-done"
            assert (task["status"], task["input_mode"]) == ("completed", "commands")
            assert task["created_at"].endswith("Z") and task["updated_at"].endswith("Z")


def test_every_annotated_route_is_in_the_table() -> None:
    files = descriptor_pb2.FileDescriptorSet.FromString(
        (ROOT / "gen" / "descriptors" / "cynode.binpb").read_bytes()
    )
    annotated = {
        f"{file.package}.{service.name}/{method.name}"
        for file in files.file
        if file.package in ("cynode.gateway.v1", "cynode.controlplane.v1")
        for service in file.service
        for method in service.method
        if method.options.HasExtension(annotations_pb2.http)
    }
    assert annotated
    assert annotated == {row.rpc for row in ROWS if row.rpc}


def test_every_difference_is_documented() -> None:
    doc = (ROOT / "docs" / "envoy-parity.md").read_text()
    for key in DIFFERENCES:
        assert f"`{key}`" in doc, key


def test_table_size_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print(f"\nparity: {len(ROWS)} rows, each sent through the shim and through Envoy")
    assert len(ROWS) >= 40
