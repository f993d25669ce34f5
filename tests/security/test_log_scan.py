"""No log of the stack holds the admin password, the PSK, the JWT secret, the node's JWT,
or any token or password a test used.

The module brings its own traffic (`scanned_run`), so it means something when run
alone: a login, a token refresh, a wrong password, a task run on the node and read
back. Run with the rest of tests/security it runs last (by name) on the same
session-wide stack, so the scan covers every attempt before it as well.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx
import pytest

from cynode.testing import Stack, iter_secrets
from tools.stack_client import GatewayClient

from .conftest import RESULTS

pytestmark = [pytest.mark.slow, pytest.mark.podman]

# admin password, node PSK, JWT signing secret, node JWT (cynode.testing.iter_secrets).
STACK_SECRETS = 4


def leaks(logs: list[Path], needles: set[str]) -> list[str]:
    found = []
    for log in logs:
        text = log.read_text(errors="replace")
        found += [f"{log.name}: {needle[:4]}..." for needle in needles if needle in text]
    return found


def test_scan_finds_a_planted_secret(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("login ok token=abcdefgh12345678 done\n")
    assert leaks([log], {"abcdefgh12345678"}) == ["x.log: abcd..."]
    assert leaks([log], {"zzzzzzzz12345678"}) == []


@pytest.fixture(scope="module")
def scanned_run(sec_stack: Stack, admin: GatewayClient, seen_tokens: set[str]) -> Stack:
    """Traffic that carries every kind of secret through the stack, then the stack whose
    logs the scan reads. Uses no fresh login: after the password-guessing attempt the
    loopback client stays throttled (429) for the login window."""
    # A refresh rotates the admin's pair; both pairs are secrets from here on.
    resp = httpx.post(
        f"{sec_stack.gateway_url}/v1/auth/refresh",
        json={"refresh_token": admin.refresh_token},
        timeout=15,
    )
    assert resp.status_code == 200, resp.text
    pair = resp.json()
    admin.access_token, admin.refresh_token = pair["access_token"], pair["refresh_token"]
    seen_tokens.update({admin.access_token, admin.refresh_token})
    # A password someone typed is not logged, right or wrong (401, or 429 once throttled).
    typed = secrets.token_urlsafe(16)
    wrong = httpx.post(
        f"{sec_stack.gateway_url}/v1/auth/login",
        json={"handle": "admin", "password": typed},
        timeout=15,
    )
    assert wrong.status_code in (401, 429), wrong.text
    seen_tokens.add(typed)
    # A job on the node: the node uses its JWT on the dispatch stream for it.
    task_id = admin.commands("echo scanned")
    result = admin.wait_done(task_id, timeout=120)
    assert result["status"] == "completed" and result["stdout"] == "scanned\n", result
    assert admin.task(task_id)["task_id"] == task_id
    assert admin.request("GET", "/v1/users/me").status_code == 200
    return sec_stack


def test_no_secret_in_any_log(scanned_run: Stack, seen_tokens: set[str]) -> None:
    stack_secrets = {s for s in iter_secrets(scanned_run) if len(s) >= 8}
    needles = stack_secrets | {s for s in seen_tokens if len(s) >= 8}
    logs = scanned_run.log_files()
    found = leaks(logs, needles)
    RESULTS[f"logs: {len(needles)} secrets looked for in {len(logs)} logs"] = not found
    # Every stack secret was there to look for (the node JWT only exists once the node
    # registered), and at least the scan's own tokens and typed password.
    assert len(stack_secrets) == STACK_SECRETS
    assert len(needles) >= STACK_SECRETS + 5 and len(logs) >= 3
    assert found == []
