"""Security tests run one whole stack (cynode.testing.Stack) with the development model, so
inference pods are real, and try to break out of it from the sandbox and from the API.
Every attempt is a row of a table; the end of the run prints how many were refused."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cynode.testing import Stack, StackSettings
from tools.stack_client import GatewayClient

RESULTS: dict[str, bool] = {}
# What the attempt got back (first line of output, exit code), for the summary.
DETAILS: dict[str, str] = {}
IMAGE = "localhost/cynode-sandbox"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if RESULTS:
        refused = sum(RESULTS.values())
        terminalreporter.section("security tests: counts")
        for name, ok in RESULTS.items():
            detail = f"  [{DETAILS[name]}]" if name in DETAILS else ""
            terminalreporter.write_line(f"{'refused' if ok else 'NOT REFUSED':12} {name}{detail}")
        terminalreporter.write_line(f"security: {refused}/{len(RESULTS)} attempts refused")


@pytest.fixture(scope="session")
def sec_stack() -> Iterator[Stack]:
    if subprocess.run(["podman", "image", "exists", IMAGE], check=False).returncode != 0:
        pytest.fail(f"{IMAGE} is missing: run `make images`")
    path = Path(tempfile.mkdtemp(prefix="cynode-security-"))
    stack = Stack(StackSettings.free(path, node_slug="security-node"))
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        if all(RESULTS.values()):
            shutil.rmtree(path, ignore_errors=True)
        else:
            print(f"\nsecurity stack logs kept in {path}/logs")


@pytest.fixture(scope="session")
def seen_tokens() -> set[str]:
    """Every token a test obtained; the log scan looks for them."""
    return set()


@pytest.fixture(scope="session")
def admin(sec_stack: Stack, seen_tokens: set[str]) -> Iterator[GatewayClient]:
    client = GatewayClient(sec_stack.gateway_url)
    client.login("admin", sec_stack.creds.admin_password)
    seen_tokens.update({client.access_token, client.refresh_token})
    yield client
    client.close()
