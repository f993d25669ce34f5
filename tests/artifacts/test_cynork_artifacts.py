"""cynork's `task artifacts list|get` against a real stack (SPEC §5.2)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cynode.testing import Stack
from cynork._app import Seams
from cynork.cli import cli
from tools.stack_client import GatewayClient

pytestmark = [pytest.mark.podman, pytest.mark.slow, pytest.mark.timeout(600)]

SCRIPT = """#!/bin/sh
set -e
mkdir -p out/sub
head -c 3000000 /dev/urandom > out/blob.bin
printf 'hello\\n' > out/sub/hello.txt
sha256sum out/blob.bin
"""


class Cy:
    def __init__(self, stack: Stack, config_dir: Path) -> None:
        self.stack = stack
        self.environ = {"XDG_CONFIG_HOME": str(config_dir)}
        self.seams = Seams(
            environ=self.environ, stderr_tty=False, stdout_tty=False, stdin_tty=False
        )

    def __call__(self, *args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(
            cli,
            [
                "--gateway-url",
                self.stack.gateway_url,
                "-c",
                self.environ["XDG_CONFIG_HOME"] + "/c.yaml",
                *args,
            ],
            obj=self.seams,
            input=input,
        )


@pytest.fixture(scope="module")
def made(art_stack: Stack, admin: GatewayClient) -> tuple[str, str]:
    task_id = admin.create(script=SCRIPT, task_name="cy-files")
    result = admin.wait_done(task_id, timeout=240)
    assert result["status"] == "completed", result
    deadline = time.monotonic() + 120
    while not admin.request("GET", f"/v1/tasks/{task_id}/artifacts").json()["complete"]:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    return task_id, result["stdout"].split()[0]


@pytest.fixture
def cy(art_stack: Stack, tmp_path: Path) -> Cy:
    runner = Cy(art_stack, tmp_path)
    login = runner(
        "auth",
        "login",
        "-u",
        "admin",
        "--password-stdin",
        input=art_stack.creds.admin_password + "\n",
    )
    assert login.exit_code == 0, login.output
    return runner


def test_list_prints_a_tab_separated_table_and_json(cy: Cy, made: tuple[str, str]) -> None:
    task_id, printed = made
    table = cy("task", "artifacts", "list", task_id)
    assert table.exit_code == 0, table.output
    rows = [line.split("\t") for line in table.stdout.splitlines()]
    assert rows[0] == ["artifact_id", "name", "content_type", "size_bytes"]
    assert sorted(r[1] for r in rows[1:]) == ["blob.bin", "sub/hello.txt"]
    assert {r[1]: r[3] for r in rows[1:]} == {"blob.bin": "3000000", "sub/hello.txt": "6"}
    as_json = cy("task", "artifacts", "list", "cy-files", "-o", "json")
    body = json.loads(as_json.stdout)
    assert body["task_id"] == task_id and len(body["artifacts"]) == 2
    assert next(a for a in body["artifacts"] if a["name"] == "blob.bin")["sha256"] == printed


def test_get_saves_checks_and_refuses_to_overwrite(
    cy: Cy, made: tuple[str, str], tmp_path: Path
) -> None:
    task_id, printed = made
    body = json.loads(cy("task", "artifacts", "list", task_id, "-o", "json").stdout)
    blob = next(a for a in body["artifacts"] if a["name"] == "blob.bin")
    target = tmp_path / "deep" / "dir" / "b.bin"
    got = cy("task", "artifacts", "get", task_id, blob["artifact_id"], "--out", str(target))
    assert got.exit_code == 0, got.output
    assert got.stdout.strip() == f"saved=true path={target}"
    assert hashlib.sha256(target.read_bytes()).hexdigest() == printed
    again = cy("task", "artifacts", "get", task_id, blob["artifact_id"], "--out", str(target))
    assert again.exit_code == 2 and "--force" in again.output
    forced = cy(
        "task",
        "artifacts",
        "get",
        task_id,
        blob["artifact_id"],
        "--out",
        str(target),
        "--force",
        "-o",
        "json",
    )
    assert forced.exit_code == 0 and json.loads(forced.stdout) == {
        "saved": True,
        "path": str(target),
    }
    missing = cy(
        "task",
        "artifacts",
        "get",
        task_id,
        "01ARZ3NDEKTSV4RRFFQ69G5FAV",
        "--out",
        str(tmp_path / "x"),
    )
    assert missing.exit_code == 4
    both = cy(
        "task", "artifacts", "get", task_id, blob["artifact_id"], "--all", "--out", str(tmp_path)
    )
    assert both.exit_code == 2


def test_get_all_fetches_the_whole_set(cy: Cy, made: tuple[str, str], tmp_path: Path) -> None:
    _, printed = made
    out = tmp_path / "all"
    got = cy("task", "artifacts", "get", "cy-files", "--all", "--out", str(out))
    assert got.exit_code == 0, got.output
    assert got.stdout.strip() == f"saved=true path={out} count=2"
    assert (out / "sub" / "hello.txt").read_bytes() == b"hello\n"
    assert hashlib.sha256((out / "blob.bin").read_bytes()).hexdigest() == printed
    assert sorted(p.name for p in out.rglob("*")) == ["blob.bin", "hello.txt", "sub"]


def test_get_right_after_the_task_ends_waits_for_the_upload(
    cy: Cy, admin: GatewayClient, tmp_path: Path
) -> None:
    """`get` waits (by default up to 60 s) for a set still being uploaded: the gateway
    holds the listing until the upload's seal wakes it (SPEC §2.11, §5.2)."""
    task_id = admin.create(
        commands=[
            "mkdir -p out && head -c 20000000 /dev/urandom > out/w.bin && sha256sum out/w.bin"
        ]
    )
    result = admin.wait_done(task_id, timeout=240)
    assert result["status"] == "completed", result
    out = tmp_path / "waited"
    got = cy("task", "artifacts", "get", task_id, "--all", "--out", str(out))
    assert got.exit_code == 0, got.output
    assert hashlib.sha256((out / "w.bin").read_bytes()).hexdigest() == result["stdout"].split()[0]
    # Complete now: a listing that may wait answers at once.
    started = time.monotonic()
    listed = cy("task", "artifacts", "list", task_id, "--wait", "30", "-o", "json")
    assert listed.exit_code == 0 and json.loads(listed.stdout)["complete"] is True
    assert time.monotonic() - started < 10
