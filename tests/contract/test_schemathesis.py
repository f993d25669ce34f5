"""Schema fuzzing: schemathesis against the live gateway on Postgres, logged in.

Its own orchestrator and no node: accepted fuzzed tasks stay queued instead of
running hundreds of containers. Every operation of /openapi.json is tested; the run
must generate at least 1000 cases with no 5xx and no response off the schema.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.contract.stack import BIN, ROOT, Stack, start_orchestrator

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

MIN_CASES = 1000
CHECKS = ",".join(
    [
        "not_a_server_error",
        "response_schema_conformance",
        "status_code_conformance",
        "content_type_conformance",
    ]
)


@pytest.fixture(scope="module")
def gateway() -> Iterator[Stack]:
    tmp = Path(tempfile.mkdtemp(prefix="cynode-fuzz-"))
    live = Stack(tmp, admin_password=secrets.token_urlsafe(18), node_psk=secrets.token_urlsafe(18))
    try:
        start_orchestrator(live)
        yield live
    finally:
        live.stop()
        shutil.rmtree(tmp, ignore_errors=True)


WATCH = "/watch$"


def _run(gateway: Stack, tmp: Path, name: str, select: list[str]) -> dict[str, Any]:
    """One schemathesis run; the token reaches it through the environment, never argv."""
    config = tmp / f"{name}.toml"
    config.write_text('headers = { Authorization = "Bearer ${CYNODE_FUZZ_TOKEN}" }\n')
    report = tmp / f"{name}.json"
    argv = [
        str(BIN / "st"),
        "--no-color",
        "--config-file",
        str(config),
        "run",
        f"{gateway.shim_url}/openapi.json",
        *select,
        "--checks",
        CHECKS,
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "90",
        "--workers",
        "2",
        "--request-timeout",
        "20",
        "--generation-database",
        "none",
        "--seed",
        "20261",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    env = {**os.environ, "CYNODE_FUZZ_TOKEN": gateway.token()}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180, cwd=ROOT, env=env)
    assert report.is_file(), done.stdout[-4000:] + done.stderr[-2000:]
    result: dict[str, Any] = json.loads(report.read_text())
    assert done.returncode == 0, done.stdout[-6000:]
    return result


def test_fuzzing_finds_no_server_error_and_no_schema_violation(
    gateway: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # WatchTask first, while no task exists: a fuzzed watch of a task that never ends
    # would hold its request open, and tasks the second run creates stay queued.
    runs = [
        _run(gateway, tmp_path, "watch", ["--include-path-regex", WATCH]),
        _run(gateway, tmp_path, "rest", ["--exclude-path-regex", WATCH]),
    ]
    served = httpx.get(f"{gateway.shim_url}/openapi.json").json()
    expected = sum(len(item) for item in served["paths"].values())
    tested = sum(run["operations"]["tested"] for run in runs)
    generated = sum(run["test_cases"]["generated"] for run in runs)
    failing = sum(run["test_cases"]["with_failures"] for run in runs)
    errored = sum(run["test_cases"]["errored"] + len(run["errors"]) for run in runs)
    with capsys.disabled():
        print(
            f"\nschemathesis: {tested}/{expected} operations, {generated} cases, "
            f"{failing} with failures (5xx or off the schema), {errored} errored"
        )
    assert tested == expected
    assert all(run["operations"]["errored"] == 0 for run in runs)
    assert generated >= MIN_CASES
    assert failing == 0, [run["failures"] for run in runs]
    assert errored == 0, [run["errors"] for run in runs]
    # The server stayed up through all of it.
    assert httpx.get(f"{gateway.shim_url}/healthz").status_code == 200
