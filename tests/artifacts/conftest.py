"""One real stack (orchestrator, node, Podman) per module for the artifact tests, and a
second user to prove another user's task stays hidden."""

from __future__ import annotations

import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cynode.testing import Stack, StackSettings, running_stack
from tools.stack_client import GatewayClient

BIN = Path(sys.executable).parent
IMAGE = "localhost/cynode-sandbox"


@pytest.fixture(scope="module")
def art_stack() -> Iterator[Stack]:
    if subprocess.run(["podman", "image", "exists", IMAGE], check=False).returncode != 0:
        pytest.fail(f"{IMAGE} is missing: run `make images`")
    state = Path(tempfile.mkdtemp(prefix="cynode-artifacts-"))
    settings = StackSettings.free(state, inference=False, node_slug=f"art-{state.name[-8:]}")
    with running_stack(settings) as stack:
        yield stack


@pytest.fixture(scope="module")
def admin(art_stack: Stack) -> Iterator[GatewayClient]:
    client = GatewayClient(art_stack.gateway_url, timeout=60)
    client.login("admin", art_stack.creds.admin_password)
    yield client
    client.close()


def make_user(stack: Stack, handle: str) -> GatewayClient:
    password = secrets.token_urlsafe(16)
    done = subprocess.run(
        [str(BIN / "cynode-orchestrator"), "user", "create", handle, "--password-stdin"],
        input=password + "\n",
        env=stack.orchestrator_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    client = GatewayClient(stack.gateway_url, timeout=60)
    client.login(handle, password)
    return client


@pytest.fixture(scope="module")
def alice(art_stack: Stack) -> Iterator[GatewayClient]:
    client = make_user(art_stack, "alice")
    yield client
    client.close()


@pytest.fixture(scope="module")
def bob(art_stack: Stack) -> Iterator[GatewayClient]:
    client = make_user(art_stack, "bob")
    yield client
    client.close()
