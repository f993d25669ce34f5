"""The example clients complete a task end to end against the live stack."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.contract.stack import BIN, ROOT, Stack

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.podman]

NODE_EXAMPLE = ROOT / "examples" / "node"


def _npm_ci() -> None:
    """Install the locked packages once; a failing npm fails the test, never skips it."""
    if (NODE_EXAMPLE / "node_modules" / "@grpc" / "grpc-js").is_dir():
        return
    npm = shutil.which("npm")
    assert npm, "npm is not on PATH (Node 20 is needed for examples/node)"
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=NODE_EXAMPLE,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, f"npm ci failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def _client_env(stack: Stack) -> dict[str, str]:
    return {**os.environ, "CYNODE_GRPC": stack.grpc_target, "CYNODE_PASSWORD": stack.admin_password}


def test_node_client_logs_in_creates_watches_and_prints_the_result(stack: Stack) -> None:
    _npm_ci()
    node = shutil.which("node")
    assert node, "node is not on PATH"
    done = subprocess.run(
        [node, "client.js", "echo hello from node", "echo to-stderr >&2"],
        cwd=NODE_EXAMPLE,
        env=_client_env(stack),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("task_id=")
    # Events came over the server stream, in order, up to the terminal one.
    assert "status=running" in lines
    assert "[stdout] hello from node" in lines
    assert "[stderr] to-stderr" in lines
    assert "status=completed (terminal)" in lines
    assert lines.index("status=running") < lines.index("status=completed (terminal)")
    assert done.stdout.endswith("stdout:\nhello from node\nstderr:\nto-stderr\n")
    assert stack.admin_password not in done.stdout + done.stderr


def test_node_client_reports_a_bad_password_cleanly(stack: Stack) -> None:
    _npm_ci()
    env = {**_client_env(stack), "CYNODE_PASSWORD": "wrong-password"}
    done = subprocess.run(
        [shutil.which("node") or "node", "client.js"],
        cwd=NODE_EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == "error: UNAUTHENTICATED: invalid handle or password"


def test_python_example_with_generated_stubs(stack: Stack) -> None:
    done = subprocess.run(
        [str(BIN / "python"), str(ROOT / "examples" / "python" / "client.py"), "echo from-python"],
        env=_client_env(stack),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[stdout] from-python" in done.stdout.splitlines()
    assert done.stdout.endswith("result status=completed\nstdout:\nfrom-python\n")
