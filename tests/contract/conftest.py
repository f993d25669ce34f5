"""One live stack for every contract test: orchestrator on Postgres, a node, Envoy."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.contract.stack import Stack, start_envoy, start_node, start_orchestrator


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    tmp = Path(tempfile.mkdtemp(prefix="cynode-contract-"))
    live = Stack(tmp, admin_password=secrets.token_urlsafe(18), node_psk=secrets.token_urlsafe(18))
    failed = True
    try:
        start_orchestrator(live)
        start_envoy(live)
        start_node(live)
        failed = False
        yield live
    finally:
        live.stop()
        if failed:
            print(f"contract stack: logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
