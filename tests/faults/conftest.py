"""Fault tests run whole stacks (cynode.testing.Stack): real orchestrator, real node, real
Podman, and break them with kill -9 and database restarts. Short leases (3 s) and
heartbeats (1 s) keep each test to about a minute on two cores.

Each test records what it counted in `fault_counts`; the totals are printed at the end
of the run, so CI logs show them."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cynode.testing import Stack, StackSettings
from tools.stack_client import GatewayClient

COUNTS: list[str] = []
FAILED = pytest.StashKey[bool]()
IMAGE = "localhost/cynode-sandbox"
# A node that comes back quickly after the orchestrator does.
NODE_YAML = "reconnect:\n  initial_seconds: 0.2\n  max_seconds: 1.0\n"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if COUNTS:
        terminalreporter.section("fault tests: counts")
        for line in COUNTS:
            terminalreporter.write_line(line)


@pytest.fixture
def fault_counts() -> list[str]:
    return COUNTS


def fault_settings(state_dir: Path, **kwargs: object) -> StackSettings:
    defaults: dict[str, object] = {
        "inference": False,
        "lease_seconds": 3,
        "heartbeat_seconds": 1,
        "node_slug": f"fault-{state_dir.name[-12:]}",
        "node_yaml": NODE_YAML,
    }
    defaults.update(kwargs)
    return StackSettings.free(state_dir, **defaults)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[FAILED] = report.failed
    return report


@pytest.fixture
def stack_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A temp dir for a stack's state and logs; kept (and named) when the test fails,
    outside pytest's rotating tmp dirs so it survives other runs."""
    path = Path(tempfile.mkdtemp(prefix=f"cynode-{request.node.name[:40]}-"))
    yield path
    if request.node.stash.get(FAILED, True):
        print(f"\nstack logs kept in {path}/logs")
    else:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_stack(stack_dir: Path) -> Iterator[list[Stack]]:
    """Stacks a test starts itself (`started.append(Stack(...))`); all stopped after."""
    if subprocess.run(["podman", "image", "exists", IMAGE], check=False).returncode != 0:
        pytest.fail(f"{IMAGE} is missing: run `make images`")
    started: list[Stack] = []
    yield started
    for stack in started:
        stack.stop()


def admin_client(stack: Stack) -> GatewayClient:
    client = GatewayClient(stack.gateway_url)
    client.login("admin", stack.creds.admin_password)
    return client
