"""Per-user quotas at the gateway (SPEC §3.9), on SQLite and Postgres: past the
queued-task quota a create answers 429 with Retry-After and stores nothing; a timeout
over the user's limit is 429 without it; /v1/users/me shows limits and use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from cynode.gateway.v1 import auth_pb2, tasks_pb2
from cynode.orchestrator.app import Gateway
from cynode.orchestrator.config import ControlPlaneOptions
from cynode.orchestrator.store.tables import JOBS, TASKS, USERS
from tests.orchestrator.gatewaykit import (
    Served,
    bearer,
    make_gateway,
    rest_login,
    rest_server,
    trailers,
    user_token,
)


async def _me(http: httpx.AsyncClient, auth: dict[str, str]) -> dict[str, Any]:
    resp = await http.get("/v1/users/me", headers=auth)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert isinstance(body, dict)
    return body


async def _set(gateway: Gateway, user_id: str, **values: Any) -> None:
    async with gateway.engine.begin() as conn:
        await conn.execute(USERS.update().where(USERS.c.id == user_id).values(**values))


async def _tasks(gateway: Gateway, user_id: str) -> list[tuple[str, str]]:
    async with gateway.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(TASKS.c.id, TASKS.c.status)
            .where(TASKS.c.user_id == user_id)
            .order_by(TASKS.c.id)
        )
        return [(r.id, r.status) for r in rows]


def _create(n: int = 0, **extra: Any) -> dict[str, Any]:
    return {"commands": [f"echo {n}"], **extra}


async def test_queued_quota_429_with_retry_after_and_nothing_lost(
    http: httpx.AsyncClient, gateway: Gateway
) -> None:
    auth = await rest_login(http, gateway)
    me = await _me(http, auth)
    await _set(gateway, me["id"], max_queued_tasks=3)
    for i in range(3):
        assert (await http.post("/v1/tasks", json=_create(i), headers=auth)).status_code == 201
    before = await _tasks(gateway, me["id"])
    over = await http.post("/v1/tasks", json=_create(9, task_name="late"), headers=auth)
    assert over.status_code == 429, over.text
    assert over.headers["content-type"].startswith("application/problem+json")
    assert over.headers["retry-after"] == "10"
    body = over.json()
    assert body["type"] == "urn:cynode:problem:resource-exhausted"
    assert "at most 3 queued tasks" in body["detail"]
    # The earlier tasks are untouched, and the refused one left nothing behind.
    assert await _tasks(gateway, me["id"]) == before
    assert [s for _, s in before] == ["queued"] * 3
    shown = await _me(http, auth)
    assert shown["limits"]["max_queued_tasks"] == 3
    assert shown["usage"] == {"queued_tasks": 3, "running_jobs": 0}
    # A task leaving the queue makes room again.
    cancel = await http.post(f"/v1/tasks/{before[0][0]}/cancel", json={}, headers=auth)
    assert cancel.status_code == 200
    assert (await http.post("/v1/tasks", json=_create(4), headers=auth)).status_code == 201
    assert (await http.post("/v1/tasks", json=_create(5), headers=auth)).status_code == 429


async def test_timeout_over_the_users_limit_is_429_without_retry_after(
    http: httpx.AsyncClient, gateway: Gateway
) -> None:
    auth = await rest_login(http, gateway)
    me = await _me(http, auth)
    await _set(gateway, me["id"], max_task_timeout_seconds=60)
    over = await http.post("/v1/tasks", json=_create(timeout_seconds=61), headers=auth)
    assert over.status_code == 429 and "retry-after" not in over.headers
    assert "over your limit of 60 s" in over.json()["detail"]
    assert await _tasks(gateway, me["id"]) == []
    at = await http.post("/v1/tasks", json=_create(timeout_seconds=60), headers=auth)
    unnamed = await http.post("/v1/tasks", json=_create(), headers=auth)
    assert at.status_code == 201 and unnamed.status_code == 201
    async with gateway.engine.connect() as conn:
        timeouts = (
            await conn.execute(
                sa.select(TASKS.c.timeout_seconds)
                .where(TASKS.c.user_id == me["id"])
                .order_by(TASKS.c.id)
            )
        ).scalars()
        # No timeout named and the default (3600 s) over the limit: the limit.
        assert list(timeouts) == [60, 60]


async def test_users_me_shows_defaults_weight_and_use(
    http: httpx.AsyncClient, gateway: Gateway
) -> None:
    auth = await rest_login(http, gateway)
    me = await _me(http, auth)
    # Defaults: 10000 queued, no running limit, the sandbox's longest timeout, and
    # inference.user_concurrency requests in flight.
    assert me["weight"] == 1
    assert me["limits"] == {
        "max_queued_tasks": 10000,
        "max_running_jobs": 0,
        "max_task_timeout_seconds": 10800,
        "max_inference_requests": 32,
    }
    assert me["usage"] == {"queued_tasks": 0, "running_jobs": 0}
    created = await http.post("/v1/tasks", json=_create(), headers=auth)
    task_id = created.json()["task_id"]
    async with gateway.engine.begin() as conn:
        await conn.execute(TASKS.update().where(TASKS.c.id == task_id).values(status="running"))
        await conn.execute(JOBS.update().where(JOBS.c.task_id == task_id).values(status="running"))
    await http.post("/v1/tasks", json=_create(1), headers=auth)
    await _set(gateway, me["id"], weight=2.5, max_running_jobs=4)
    me = await _me(http, auth)
    assert me["weight"] == 2.5 and me["limits"]["max_running_jobs"] == 4
    assert me["usage"] == {"queued_tasks": 1, "running_jobs": 1}


async def test_quota_over_grpc_is_resource_exhausted(served: Served) -> None:
    _, login = await user_token(served)
    md = bearer(login.access_token)
    me = await served.auth.GetCurrentUser(auth_pb2.GetCurrentUserRequest(), metadata=md)
    await _set(served.gateway, me.id, max_queued_tasks=1)
    await served.tasks.CreateTask(tasks_pb2.CreateTaskRequest(prompt="one"), metadata=md)
    call = served.tasks.CreateTask(tasks_pb2.CreateTaskRequest(prompt="two"), metadata=md)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert trailers(err.value.trailing_metadata())["retry-after"] == "10"
    me = await served.auth.GetCurrentUser(auth_pb2.GetCurrentUserRequest(), metadata=md)
    assert me.limits.max_queued_tasks == 1 and me.usage.queued_tasks == 1


async def test_defaults_come_from_config(db_engine: AsyncEngine, tmp_path: Path) -> None:
    gw = make_gateway(
        db_engine,
        tmp_path,
        control_plane=ControlPlaneOptions(max_queued_tasks=2, max_timeout_seconds=3600),
    )
    async with rest_server(gw.rest_app()) as url, httpx.AsyncClient(base_url=url) as http:
        auth = await rest_login(http, gw)
        me = await _me(http, auth)
        assert me["limits"]["max_queued_tasks"] == 2
        assert me["limits"]["max_task_timeout_seconds"] == 3600
        for i in range(2):
            assert (await http.post("/v1/tasks", json=_create(i), headers=auth)).status_code == 201
        assert (await http.post("/v1/tasks", json=_create(), headers=auth)).status_code == 429
        # A user's own value wins over the default; 0 is no limit.
        await _set(gw, me["id"], max_queued_tasks=0)
        assert (await http.post("/v1/tasks", json=_create(), headers=auth)).status_code == 201
