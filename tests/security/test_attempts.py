"""Escape and abuse attempts, from inside the sandbox and from the API; each must be
refused. Sandbox attempts are tasks submitted together (they run while the next is
checked); API attempts are plain HTTP against the gateway and control plane."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest

from cynode.testing import BIN, Stack
from tools.stack_client import GatewayClient

from .conftest import DETAILS, RESULTS

pytestmark = [pytest.mark.slow, pytest.mark.podman, pytest.mark.model, pytest.mark.timeout(600)]

PY = "python3 -c "


def py(source: str) -> str:
    """A shell command running `source`; base64 keeps the shell out of its quoting."""
    encoded = base64.b64encode(source.encode()).decode()
    return f"python3 -c \"import base64; exec(base64.b64decode('{encoded}'))\""


FORK_BOMB = """
import os, sys, time
n = 0
try:
    while n < 5000:
        if os.fork() == 0:
            time.sleep(3)
            os._exit(0)
        n += 1
except OSError as exc:
    print(f"fork refused after {n}: {exc.strerror}")
    sys.exit(1)
print(f"forked {n}")
"""

SMUGGLE = r"""
import socket
s = socket.create_connection(("127.0.0.1", 11434), timeout=10)
body = (b"0\r\n\r\nPOST /api/pull HTTP/1.1\r\nHost: x\r\nContent-Length: 15\r\n\r\n"
        b'{"name":"evil"}')
s.sendall(b"POST /api/show HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
          b"Transfer-Encoding: chunked\r\n\r\n" % len(body) + body)
s.settimeout(5)
data = b""
try:
    while True:
        part = s.recv(65536)
        if not part:
            break
        data += part
except OSError:
    pass
for line in data.split(b"\r\n"):
    if line.startswith(b"HTTP/1."):
        print("status", line.split()[1].decode())
"""


@dataclass(frozen=True)
class SandboxAttempt:
    name: str
    commands: tuple[str, ...]
    use_inference: bool
    refused: Callable[[dict[str, Any]], bool]


def _exit_nonzero(body: dict[str, Any]) -> bool:
    return bool(body["status"] == "failed" and body["jobs"][-1]["exit_code"] != 0)


def _statuses(body: dict[str, Any]) -> list[int]:
    return [
        int(line.split()[1]) for line in body["stdout"].splitlines() if line.startswith("status ")
    ]


def _smuggle_refused(body: dict[str, Any]) -> bool:
    codes = _statuses(body)
    # Either the ambiguous request is rejected outright, or the tail after it is never
    # run as a second request that succeeds.
    return bool(codes) and (codes[0] >= 400 or all(c >= 400 for c in codes[1:]))


def _mgmt(path: str) -> SandboxAttempt:
    cmd = f'curl -s -o /dev/null -w "%{{http_code}}" -X POST "$OLLAMA_BASE_URL{path}" -d "{{}}"'
    return SandboxAttempt(
        f"sandbox: proxy management path {path}",
        (cmd,),
        True,
        lambda body: body["stdout"].strip() == "403",
    )


def sandbox_attempts(stack: Stack) -> list[SandboxAttempt]:
    gw = stack.ports["gateway_rest"]
    connect = PY + "\"import socket; socket.create_connection(('{0}', {1}), timeout=3)\""
    return [
        SandboxAttempt("sandbox: reach the internet (1.1.1.1:53)",
                       (connect.format("1.1.1.1", 53),), False, _exit_nonzero),
        SandboxAttempt("sandbox: reach the host's gateway port",
                       (connect.format("127.0.0.1", gw),), False, _exit_nonzero),
        SandboxAttempt("inference pod: reach the host's gateway port",
                       (connect.format("127.0.0.1", gw),), True, _exit_nonzero),
        SandboxAttempt("inference pod: reach the internet (1.1.1.1:53)",
                       (connect.format("1.1.1.1", 53),), True, _exit_nonzero),
        SandboxAttempt("sandbox: write to the root filesystem (/etc)",
                       ("touch /etc/cynode-was-here",), False, _exit_nonzero),
        SandboxAttempt("sandbox: become root (setuid 0)",
                       (PY + '"import os; os.setuid(0)"',), False, _exit_nonzero),
        SandboxAttempt("sandbox: fork bomb", (py(FORK_BOMB),), False,
                       lambda body: "fork refused" in body["stdout"]),
        SandboxAttempt("sandbox: memory hog (1.5 GiB)",
                       (PY + '"b = bytearray(1536 * 1024 * 1024); print(len(b))"',), False,
                       _exit_nonzero),
        _mgmt("/api/pull"),
        _mgmt("/api/push"),
        _mgmt("/api/delete"),
        _mgmt("/api/create"),
        _mgmt("/api/copy"),
        SandboxAttempt("inference pod: request smuggling (CL + TE) to reach /api/pull",
                       (py(SMUGGLE),), True, _smuggle_refused),
        SandboxAttempt("sandbox: find a credential in the environment", ("env",), True,
                       lambda body: stack.creds.node_psk not in body["stdout"]
                       and stack.creds.admin_password not in body["stdout"]
                       and "TOKEN" not in body["stdout"].upper().replace("CYNODE_TASK", "")),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def sandbox_results(sec_stack: Stack, admin: GatewayClient) -> dict[str, dict[str, Any]]:
    ids = {
        a.name: admin.create(
            input_mode="commands",
            commands=list(a.commands),
            use_inference=a.use_inference,
            timeout_seconds=60,
        )
        for a in sandbox_attempts(sec_stack)
    }
    return {name: admin.wait_done(task_id, timeout=300) for name, task_id in ids.items()}


SANDBOX_NAMES = [
    "sandbox: reach the internet (1.1.1.1:53)",
    "sandbox: reach the host's gateway port",
    "inference pod: reach the host's gateway port",
    "inference pod: reach the internet (1.1.1.1:53)",
    "sandbox: write to the root filesystem (/etc)",
    "sandbox: become root (setuid 0)",
    "sandbox: fork bomb",
    "sandbox: memory hog (1.5 GiB)",
    "sandbox: proxy management path /api/pull",
    "sandbox: proxy management path /api/push",
    "sandbox: proxy management path /api/delete",
    "sandbox: proxy management path /api/create",
    "sandbox: proxy management path /api/copy",
    "inference pod: request smuggling (CL + TE) to reach /api/pull",
    "sandbox: find a credential in the environment",
]


@pytest.mark.parametrize("name", SANDBOX_NAMES)
def test_sandbox_attempt_refused(
    name: str, sec_stack: Stack, sandbox_results: dict[str, dict[str, Any]]
) -> None:
    attempt = next(a for a in sandbox_attempts(sec_stack) if a.name == name)
    body = sandbox_results[name]
    refused = attempt.refused(body)
    RESULTS[name] = refused
    job = body["jobs"][-1]
    out = (body["stdout"].strip() or body["stderr"].strip()).splitlines()
    if name.endswith("environment"):
        out = [f"{len(out)} variables"]
    DETAILS[name] = (
        f"exit {job.get('exit_code', 0)}{' ' + job['reason'] if job.get('reason') else ''}: "
        + (" | ".join(out[-2:])[:90] if out else "(no output)")
    )
    assert refused, body


# API attempts ---------------------------------------------------------------------


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _me(stack: Stack, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.get(f"{stack.gateway_url}/v1/users/me", headers=headers, timeout=10).status_code


def api_no_token(stack: Stack, admin: GatewayClient, bob: GatewayClient) -> bool:
    return _me(stack, None) == 401


def api_tampered_payload(stack: Stack, admin: GatewayClient, bob: GatewayClient) -> bool:
    head, payload, sig = bob.access_token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = jwt.decode(admin.access_token, options={"verify_signature": False})["sub"]
    return _me(stack, f"{head}.{_b64(claims)}.{sig}") == 401


def api_alg_none(stack: Stack, admin: GatewayClient, bob: GatewayClient) -> bool:
    claims = jwt.decode(admin.access_token, options={"verify_signature": False})
    return _me(stack, f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.") == 401


def api_wrong_key(stack: Stack, admin: GatewayClient, bob: GatewayClient) -> bool:
    claims = jwt.decode(admin.access_token, options={"verify_signature": False})
    forged = jwt.encode(claims, secrets.token_urlsafe(32), algorithm="HS256")
    return _me(stack, forged) == 401


def api_refresh_as_access(stack: Stack, admin: GatewayClient, bob: GatewayClient) -> bool:
    return _me(stack, admin.refresh_token) == 401


def api_psk_guessing(stack: Stack, admin: GatewayClient, bob: GatewayClient) -> bool:
    codes = []
    for _ in range(20):
        resp = httpx.post(
            f"{stack.control_url}/v1/nodes/register",
            json={"psk": secrets.token_urlsafe(16), "capability": {"node": {"node_slug": "evil"}}},
            timeout=10,
        )
        codes.append(resp.status_code)
    return all(code in (401, 429) for code in codes)


def api_other_users_task(stack: Stack, admin: GatewayClient, bob: GatewayClient) -> bool:
    task_id = admin.commands("echo admin-only")
    reads = [
        bob.request("GET", f"/v1/tasks/{task_id}").status_code,
        bob.request("GET", f"/v1/tasks/{task_id}/result").status_code,
        bob.request("GET", f"/v1/tasks/{task_id}/logs").status_code,
        bob.request("POST", f"/v1/tasks/{task_id}/cancel").status_code,
    ]
    listed = bob.request("GET", "/v1/tasks").json().get("tasks", [])
    return reads == [404, 404, 404, 404] and all(t["task_id"] != task_id for t in listed)


def api_password_guessing(stack: Stack, admin: GatewayClient, bob: GatewayClient) -> bool:
    codes = [
        httpx.post(
            f"{stack.gateway_url}/v1/auth/login",
            json={"handle": "bob", "password": secrets.token_urlsafe(8)},
            timeout=10,
        ).status_code
        for _ in range(8)
    ]
    return set(codes) <= {401, 429} and codes[-1] == 429


def api_reused_refresh(stack: Stack, admin: GatewayClient, bob: GatewayClient) -> bool:
    old = bob.refresh_token
    first = httpx.post(f"{stack.gateway_url}/v1/auth/refresh", json={"refresh_token": old})
    again = httpx.post(f"{stack.gateway_url}/v1/auth/refresh", json={"refresh_token": old})
    return first.status_code == 200 and again.status_code == 401


def api_oversized_prompt(stack: Stack, admin: GatewayClient, bob: GatewayClient) -> bool:
    resp = admin.request("POST", "/v1/tasks", json={"prompt": "x" * (1024 * 1024 + 1)})
    return resp.status_code == 413


API_ATTEMPTS: dict[str, Callable[[Stack, GatewayClient, GatewayClient], bool]] = {
    "api: call without a token": api_no_token,
    "api: token with a tampered payload (sub of admin)": api_tampered_payload,
    "api: token with alg none": api_alg_none,
    "api: token signed with another key": api_wrong_key,
    "api: refresh token used as access token": api_refresh_as_access,
    "api: PSK guessing (20 wrong keys)": api_psk_guessing,
    "api: another user's task (get, result, logs, cancel, list)": api_other_users_task,
    "api: password guessing is throttled": api_password_guessing,
    "api: reused refresh token": api_reused_refresh,
    "api: prompt over 1 MiB": api_oversized_prompt,
}


@pytest.fixture(scope="module")
def bob(sec_stack: Stack, seen_tokens: set[str]) -> GatewayClient:
    password = secrets.token_urlsafe(16)
    done = subprocess.run(
        [str(BIN / "cynode-orchestrator"), "user", "create", "bob", "--password-stdin"],
        input=password + "\n",
        env=sec_stack.orchestrator_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    client = GatewayClient(sec_stack.gateway_url)
    client.login("bob", password)
    seen_tokens.update({client.access_token, client.refresh_token, password})
    return client


@pytest.mark.parametrize("name", list(API_ATTEMPTS))
def test_api_attempt_refused(
    name: str,
    sec_stack: Stack,
    admin: GatewayClient,
    bob: GatewayClient,
    seen_tokens: set[str],
) -> None:
    seen_tokens.update({admin.access_token, admin.refresh_token})
    refused = API_ATTEMPTS[name](sec_stack, admin, bob)
    RESULTS[name] = refused
    assert refused
