"""A full flow with every log captured at DEBUG (uvicorn access log included): the
admin password and the tokens never appear."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cynode.orchestrator.auth import ensure_admin
from tests.orchestrator.gatewaykit import make_gateway, rest_server, unique


async def test_flow_leaves_no_secret_in_logs(
    db_engine: AsyncEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("uvicorn", "uvicorn.access", "uvicorn.error", "cynode", "sqlalchemy.engine"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    gw = make_gateway(db_engine, tmp_path)
    password = "admin-" + unique("secret")
    await ensure_admin(gw.factory, gw.passwords, password)  # may exist from another test
    handle = unique("leak")
    from cynode.orchestrator.auth import create_user

    await create_user(gw.factory, gw.passwords, handle, password, is_admin=True)
    secrets: list[str] = [password]
    async with (
        rest_server(gw.rest_app(), access_log=True) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        pair = (
            await http.post("/v1/auth/login", json={"handle": handle, "password": password})
        ).json()
        secrets += [pair["access_token"], pair["refresh_token"]]
        auth = {"Authorization": f"Bearer {pair['access_token']}"}
        await http.post("/v1/auth/login", json={"handle": handle, "password": password + "x"})
        await http.get("/v1/users/me", headers=auth)
        task = (await http.post("/v1/tasks", json={"prompt": "hello"}, headers=auth)).json()
        await http.get(f"/v1/tasks/{task['task_id']}", headers=auth)
        new = (
            await http.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        ).json()
        secrets += [new["access_token"], new["refresh_token"]]
        # Reuse of the old token, then a logout: the paths that log warnings.
        await http.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        await http.post("/v1/auth/logout", json={"refresh_token": new["refresh_token"]})
        await http.get("/v1/users/me", headers={"Authorization": "Bearer " + new["access_token"]})
    text = caplog.text
    assert "GET /v1/users/me" in text  # the access log was captured
    for secret in secrets:
        assert secret not in text
    async with gw.factory() as s:
        from sqlmodel import select

        from cynode.orchestrator.store import AuditLog

        details = [str(a.detail) for a in await s.exec(select(AuditLog))]
    for secret in secrets:
        assert all(secret not in d for d in details)
