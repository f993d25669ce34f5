"""`cynork task delete` in process (CliRunner, in a worker thread) against a real
gateway (uvicorn on a socket, the real database and blob store, SQLite and Postgres):
the task, its artifact rows and its blobs go; a live task, another user's task and an
unknown one keep their exit codes (SPEC §2.12, §5.2)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
from click.testing import CliRunner, Result

from cynode.orchestrator.app import Gateway
from cynork._app import Seams
from cynork.cli import cli
from tests.orchestrator.gateway.conftest import gateway, http, rest_url
from tests.orchestrator.gateway.test_artifacts_rest import finished
from tests.orchestrator.gatewaykit import rest_login

__all__ = ["gateway", "http", "rest_url"]

FILES = {"out.txt": b"only this task made these bytes\n"}


async def cynork(rest_url: str, auth: dict[str, str], config: Path, *args: str) -> Result:
    seams = Seams(
        environ={
            "CYNORK_GATEWAY_URL": rest_url,
            "CYNORK_TOKEN": auth["Authorization"].removeprefix("Bearer "),
            "XDG_CONFIG_HOME": str(config),
        },
        stderr_tty=False,
        stdout_tty=False,
        stdin_tty=False,
    )
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args), obj=seams, input="")


async def test_delete_removes_the_task_its_artifacts_and_their_blobs(
    http: httpx.AsyncClient, gateway: Gateway, rest_url: str, tmp_path: Path
) -> None:
    owner = await rest_login(http, gateway)
    stranger = await rest_login(http, gateway)
    task_id, arts = await finished(http, gateway, owner, dict(FILES), name="to-delete")
    sha = arts["out.txt"].sha256
    assert gateway.blobs is not None and gateway.blobs.has(sha)

    unanswered = await cynork(rest_url, owner, tmp_path, "task", "delete", "to-delete")
    assert unanswered.exit_code == 2 and "pass -y" in unanswered.stderr
    hidden = await cynork(rest_url, stranger, tmp_path, "task", "delete", "-y", task_id)
    assert hidden.exit_code == 4, hidden.output
    assert (await http.get(f"/v1/tasks/{task_id}", headers=owner)).status_code == 200

    gone = await cynork(
        rest_url, owner, tmp_path, "-o", "json", "task", "delete", "-y", "to-delete"
    )
    assert gone.exit_code == 0, gone.output
    assert json.loads(gone.stdout) == {"task_id": task_id, "deleted": True}
    assert (await http.get(f"/v1/tasks/{task_id}", headers=owner)).status_code == 404
    assert not gateway.blobs.has(sha)
    again = await cynork(rest_url, owner, tmp_path, "task", "delete", "-y", task_id)
    assert again.exit_code == 4


async def test_a_live_task_is_refused_with_exit_5(
    http: httpx.AsyncClient, gateway: Gateway, rest_url: str, tmp_path: Path
) -> None:
    owner = await rest_login(http, gateway)
    live = (await http.post("/v1/tasks", json={"commands": ["sleep 60"]}, headers=owner)).json()
    refused = await cynork(rest_url, owner, tmp_path, "task", "delete", "-y", live["task_id"])
    assert refused.exit_code == 5
    assert "cancel it before deleting it" in refused.stderr
    assert (await http.get(f"/v1/tasks/{live['task_id']}", headers=owner)).status_code == 200
    await http.post(f"/v1/tasks/{live['task_id']}/cancel", json={}, headers=owner)
    table = await cynork(rest_url, owner, tmp_path, "task", "delete", "-y", live["task_id"])
    assert table.exit_code == 0 and table.stdout == f"task_id={live['task_id']} deleted=true\n"
