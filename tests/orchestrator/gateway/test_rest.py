"""The gateway over REST (the shim in front of the same servicers), through a real
uvicorn socket, on SQLite and Postgres."""

from __future__ import annotations

import base64
import json

import httpx

from cynode.orchestrator.app import Gateway
from cynode.orchestrator.gateway.limits import MAX_PROMPT_BYTES
from cynode.orchestrator.store import Job, Task, transaction
from tests.orchestrator.gatewaykit import PASSWORD, rest_login, unique


def _problem(resp: httpx.Response, status: int) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert body["status"] == status and body["type"] and body["title"]
    assert isinstance(body, dict)
    return body


async def test_auth_flow_over_rest(http: httpx.AsyncClient, gateway: Gateway) -> None:
    handle = unique("flow")
    from cynode.orchestrator.auth import create_user

    await create_user(gateway.factory, gateway.passwords, handle, PASSWORD)
    resp = await http.post("/v1/auth/login", json={"handle": handle, "password": PASSWORD})
    pair = resp.json()
    assert resp.status_code == 200 and pair["token_type"] == "Bearer"
    assert pair["expires_in"] == 900
    auth = {"Authorization": f"Bearer {pair['access_token']}"}
    me = (await http.get("/v1/users/me", headers=auth)).json()
    assert me["handle"] == handle and me["is_active"] is True and len(me["id"]) == 26
    resp = await http.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    new = resp.json()
    assert resp.status_code == 200 and new["refresh_token"] != pair["refresh_token"]
    old = await http.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    _problem(old, 401)
    # Reuse of the rotated token revoked the session: the new pair is dead too.
    _problem(await http.post("/v1/auth/refresh", json={"refresh_token": new["refresh_token"]}), 401)

    pair = (await http.post("/v1/auth/login", json={"handle": handle, "password": PASSWORD})).json()
    resp = await http.post("/v1/auth/logout", json={"refresh_token": pair["refresh_token"]})
    assert resp.status_code == 204 and resp.content == b""
    gone = await http.get(
        "/v1/users/me", headers={"Authorization": f"Bearer {pair['access_token']}"}
    )
    assert _problem(gone, 401)["detail"] == "missing or invalid access token"
    _problem(await http.get("/v1/users/me"), 401)

    wrong = await http.post("/v1/auth/login", json={"handle": handle, "password": "nope"})
    ghost = await http.post("/v1/auth/login", json={"handle": "ghost-x", "password": "nope"})
    assert _problem(wrong, 401) == _problem(ghost, 401)


async def test_task_lifecycle_over_rest(http: httpx.AsyncClient, gateway: Gateway) -> None:
    auth = await rest_login(http, gateway)
    created = []
    for body in (
        {"prompt": "Say hi"},
        {"input_mode": "script", "script": "echo hi", "task_name": "s"},
        {
            "input_mode": "commands",
            "commands": ["echo a", "echo b"],
            "use_inference": True,
            "attachments": [{"name": "a.txt", "content": base64.b64encode(b"data").decode()}],
        },
    ):
        resp = await http.post("/v1/tasks", json=body, headers=auth)
        assert resp.status_code == 201, resp.text
        assert resp.json()["status"] == "queued"
        created.append(resp.json())
    assert created[1]["task_name"] == "s"
    # SPEC §2: the task object itself, not wrapped in {"task": ...}.
    got = (await http.get(f"/v1/tasks/{created[0]['task_id']}", headers=auth)).json()
    assert "task" not in got and got["task_id"] == created[0]["task_id"]
    assert got["input_mode"] == "prompt" and got["status"] == "queued"
    assert got["created_at"].endswith("Z") and got["updated_at"].endswith("Z")
    by_name = (await http.get("/v1/tasks/s", headers=auth)).json()
    assert by_name["task_id"] == created[1]["task_id"] and by_name["task_name"] == "s"
    assert by_name["input_mode"] == "script"

    page = (await http.get("/v1/tasks", params={"limit": 2}, headers=auth)).json()
    assert [t["task_id"] for t in page["tasks"]] == [c["task_id"] for c in created[::-1][:2]]
    rest = (
        await http.get(
            "/v1/tasks", params={"limit": 2, "cursor": page["next_cursor"]}, headers=auth
        )
    ).json()
    assert [t["task_id"] for t in rest["tasks"]] == [created[0]["task_id"]]

    tid = created[2]["task_id"]
    async with transaction(gateway.factory) as s:
        from sqlmodel import select

        job = (await s.exec(select(Job).where(Job.task_id == tid))).one()
        job.status, job.stdout, job.exit_code = "completed", b"a\nb\n", 0
        s.add(job)
        task = await s.get(Task, tid)
        assert task is not None
        task.status = "completed"
        s.add(task)
    result = (await http.get(f"/v1/tasks/{tid}/result", headers=auth)).json()
    assert result["status"] == "completed" and result["stdout"] == "a\nb\n"
    assert result["jobs"][0]["truncated"] is not None
    logs = await http.get(f"/v1/tasks/{tid}/logs", params={"stream": "stdout"}, headers=auth)
    assert logs.json()["lines"] == ["a", "b"]
    lines = []
    async with http.stream("GET", f"/v1/tasks/{tid}/watch", headers=auth) as resp:
        assert resp.status_code == 200
        async for line in resp.aiter_lines():
            if line.strip():
                lines.append(json.loads(line))
    assert lines[-1]["terminal"] is True and lines[-1]["status"] == "completed"
    assert "task_result" not in lines[-1]  # `task watch -o json` sees what it always did
    async with http.stream(
        "GET", f"/v1/tasks/{tid}/watch", params={"include_result": "true"}, headers=auth
    ) as resp:
        final = [json.loads(line) async for line in resp.aiter_lines() if line.strip()][-1]
    assert final["terminal"] is True and final["task_result"] == result

    resp = await http.post(f"/v1/tasks/{created[0]['task_id']}/cancel", json={}, headers=auth)
    assert resp.status_code == 200 and resp.json() == {
        "task_id": created[0]["task_id"],
        "canceled": True,
    }
    again = await http.post(f"/v1/tasks/{created[0]['task_id']}/cancel", json={}, headers=auth)
    problem = _problem(again, 409)
    assert problem["type"] == "urn:cynode:problem:conflict" and problem["title"] == "Conflict"


async def test_errors_are_problem_json(http: httpx.AsyncClient, gateway: Gateway) -> None:
    auth = await rest_login(http, gateway)
    _problem(await http.post("/v1/tasks", json={}, headers=auth), 400)
    _problem(await http.post("/v1/tasks", json={"prompt": "a", "script": "b"}, headers=auth), 400)
    _problem(await http.post("/v1/tasks", content=b"{not json", headers=auth), 400)
    big = await http.post("/v1/tasks", json={"prompt": "x" * (MAX_PROMPT_BYTES + 1)}, headers=auth)
    _problem(big, 413)
    _problem(await http.get("/v1/tasks/01ARZ3NDEKTSV4RRFFQ69G5FAV", headers=auth), 404)
    _problem(await http.get("/v1/tasks", params={"limit": -5}, headers=auth), 400)
    _problem(await http.post("/v1/tasks", json={"prompt": "x"}), 401)
