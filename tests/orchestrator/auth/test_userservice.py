"""UserService over REST (the shim in front of the servicer, a real uvicorn socket) and
gRPC, on SQLite and Postgres: administrators manage accounts; a disabled user's token
stops working at once and their login is refused; everything is audited."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import httpx
import pytest
import sqlalchemy as sa

from cynode.gateway.v1 import users_pb2, users_pb2_grpc
from cynode.orchestrator.app import Gateway
from cynode.orchestrator.store.tables import USERS
from tests.orchestrator.gatewaykit import (
    PASSWORD,
    Served,
    bearer,
    make_gateway,
    rest_login,
    rest_server,
    unique,
    user_token,
)

AUDIT = USERS.metadata.tables["audit_log"]
NEW_PASSWORD = "another horse battery"


def _ok(resp: httpx.Response, status: int = 200) -> Any:
    assert resp.status_code == status, resp.text
    return resp.json()


async def _login(http: httpx.AsyncClient, handle: str, password: str) -> httpx.Response:
    return await http.post("/v1/auth/login", json={"handle": handle, "password": password})


async def _audit(gateway: Gateway, action: str, target: str) -> list[tuple[str, str]]:
    async with gateway.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(AUDIT.c.outcome, AUDIT.c.handle, AUDIT.c.detail)
            .where(AUDIT.c.action == action)
            .order_by(AUDIT.c.id)
        )
        return [
            (r.outcome, r.handle)
            for r in rows
            if target in ((r.detail or {}).get("target_handle"), (r.detail or {}).get("target"))
        ]


async def test_admin_manages_a_user_end_to_end(http: httpx.AsyncClient, gateway: Gateway) -> None:
    admin = await rest_login(http, gateway, is_admin=True)
    me = _ok(await http.get("/v1/users/me", headers=admin))
    handle = unique("new")
    created = _ok(
        await http.post(
            "/v1/users",
            json={"handle": handle, "password": PASSWORD, "email": "n@example.org"},
            headers=admin,
        ),
        201,
    )
    assert created["handle"] == handle and created["email"] == "n@example.org"
    assert created["is_active"] is True and created["is_admin"] is False
    assert "password" not in str(created) and "hash" not in str(created)
    assert created["limits"]["max_queued_tasks"] == 10000 and created["quotas"] == {}
    user_id = created["id"]
    assert _ok(await http.get(f"/v1/users/{user_id}", headers=admin))["handle"] == handle
    assert _ok(await http.get(f"/v1/users/{handle}", headers=admin))["id"] == user_id

    # The new user logs in and works.
    pair = _ok(await _login(http, handle, PASSWORD))
    theirs = {"Authorization": f"Bearer {pair['access_token']}"}
    assert _ok(await http.get("/v1/users/me", headers=theirs))["id"] == user_id

    # Disable: their token is refused on the next call, and so is a login.
    assert _ok(await http.post(f"/v1/users/{user_id}/disable", json={}, headers=admin)) == {
        "user_id": user_id,
        "disabled": True,
    }
    assert (await http.get("/v1/users/me", headers=theirs)).status_code == 401
    assert (await _login(http, handle, PASSWORD)).status_code == 401
    assert _ok(await http.get(f"/v1/users/{user_id}", headers=admin))["is_active"] is False

    # Enable, then reset the password: the old one stops working, the new one logs in.
    assert _ok(await http.post(f"/v1/users/{handle}/enable", json={}, headers=admin)) == {
        "user_id": user_id,
        "enabled": True,
    }
    pair = _ok(await _login(http, handle, PASSWORD))
    theirs = {"Authorization": f"Bearer {pair['access_token']}"}
    reset = await http.post(
        f"/v1/users/{user_id}/reset_password", json={"password": NEW_PASSWORD}, headers=admin
    )
    assert _ok(reset) == {"user_id": user_id, "password_reset": True}
    assert (await http.get("/v1/users/me", headers=theirs)).status_code == 401
    assert (await _login(http, handle, PASSWORD)).status_code == 401
    pair = _ok(await _login(http, handle, NEW_PASSWORD))
    _ok(await _login(http, handle, NEW_PASSWORD))
    revoked = await http.post(f"/v1/users/{user_id}/revoke_sessions", json={}, headers=admin)
    assert _ok(revoked) == {"user_id": user_id, "revoked": 2}
    stale = {"Authorization": f"Bearer {pair['access_token']}"}
    assert (await http.get("/v1/users/me", headers=stale)).status_code == 401

    # Weight and quotas; a negative value clears one back to the default.
    patched = _ok(
        await http.patch(
            f"/v1/users/{user_id}",
            json={"weight": 3, "quotas": {"max_queued_tasks": 5, "max_running_jobs": 0}},
            headers=admin,
        )
    )
    assert patched["weight"] == 3
    assert patched["quotas"] == {"max_queued_tasks": 5, "max_running_jobs": 0}
    assert patched["limits"]["max_queued_tasks"] == 5
    cleared = _ok(
        await http.patch(
            f"/v1/users/{user_id}", json={"quotas": {"max_queued_tasks": -1}}, headers=admin
        )
    )
    assert cleared["quotas"] == {"max_running_jobs": 0} and cleared["weight"] == 3
    bad = await http.patch(f"/v1/users/{user_id}", json={"weight": 0}, headers=admin)
    assert bad.status_code == 400 and "weight" in bad.json()["detail"]

    # Every act is audited with the admin as actor and the user as target.
    for action in (
        "user_create",
        "user_disable",
        "user_enable",
        "user_password",
        "user_revoke_sessions",
        "user_update",
    ):
        rows = await _audit(gateway, action, handle)
        assert rows and all(handle_ == me["handle"] for _, handle_ in rows), action
    # So is the refused one (weight 0), as a failure.
    assert ("failure", me["handle"]) in await _audit(gateway, "user_update", user_id)


async def test_admin_errors(http: httpx.AsyncClient, gateway: Gateway) -> None:
    admin = await rest_login(http, gateway, is_admin=True)
    me = _ok(await http.get("/v1/users/me", headers=admin))
    handle = unique("dup")
    body = {"handle": handle, "password": PASSWORD}
    _ok(await http.post("/v1/users", json=body, headers=admin), 201)
    assert (await http.post("/v1/users", json=body, headers=admin)).status_code == 409
    short = await http.post("/v1/users", json={"handle": unique(), "password": "x"}, headers=admin)
    assert short.status_code == 400
    bad_handle = await http.post(
        "/v1/users", json={"handle": "-no", "password": PASSWORD}, headers=admin
    )
    assert bad_handle.status_code == 400
    assert (await http.get("/v1/users/nobody-here", headers=admin)).status_code == 404
    gone = await http.post("/v1/users/nobody-here/disable", json={}, headers=admin)
    assert gone.status_code == 404
    selfish = await http.post(f"/v1/users/{me['id']}/disable", json={}, headers=admin)
    assert selfish.status_code == 400 and "yourself" in selfish.json()["detail"]
    assert (await http.get("/v1/users", params={"cursor": "zz"}, headers=admin)).status_code == 400
    assert (await http.get("/v1/users", params={"limit": -1}, headers=admin)).status_code == 400


async def test_list_pages_through_every_user(http: httpx.AsyncClient, gateway: Gateway) -> None:
    admin = await rest_login(http, gateway, is_admin=True)
    for _ in range(3):
        await rest_login(http, gateway)
    seen: list[str] = []
    cursor = ""
    while True:
        page = _ok(
            await http.get("/v1/users", params={"limit": 2, "cursor": cursor}, headers=admin)
        )
        assert len(page["users"]) <= 2
        seen += [u["id"] for u in page["users"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == sorted(seen) and len(seen) == len(set(seen)) >= 4
    async with gateway.engine.connect() as conn:
        total = (await conn.execute(sa.select(sa.func.count()).select_from(USERS))).scalar()
    assert len(seen) == total


async def test_non_admins_are_refused_and_audited(
    http: httpx.AsyncClient, gateway: Gateway
) -> None:
    plain = await rest_login(http, gateway)
    me = _ok(await http.get("/v1/users/me", headers=plain))
    for method, path, body in (
        ("GET", "/v1/users", None),
        ("POST", "/v1/users", {"handle": unique(), "password": PASSWORD}),
        ("GET", f"/v1/users/{me['id']}", None),
        ("PATCH", f"/v1/users/{me['id']}", {"weight": 100}),
        ("POST", f"/v1/users/{me['id']}/enable", {}),
    ):
        resp = await http.request(method, path, json=body, headers=plain)
        assert resp.status_code == 403, (method, path, resp.text)
        assert resp.json()["type"] == "urn:cynode:problem:permission-denied"
    assert (await _audit(gateway, "user_update", me["id"])) == [("denied", me["handle"])]
    assert _ok(await http.get("/v1/users/me", headers=plain))["weight"] == 1


async def test_over_grpc(served: Served) -> None:
    stub = users_pb2_grpc.UserServiceStub(served.channel)  # type: ignore[no-untyped-call]
    _, admin = await user_token(served, is_admin=True)
    _, plain = await user_token(served)
    handle = unique("grpc")
    made = await stub.CreateUser(
        users_pb2.CreateUserRequest(handle=handle, password=PASSWORD),
        metadata=bearer(admin.access_token),
    )
    assert made.handle == handle and not made.HasField("email")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetUser(
            users_pb2.GetUserRequest(user_id=made.id), metadata=bearer(plain.access_token)
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_disable_reaches_another_replica_within_a_second(
    gateway: Gateway, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Two gateways on one database: a disable on one is refused on the other within
    the access check's 1 s cache (SPEC §2.9)."""
    other = make_gateway(gateway.engine, tmp_path_factory.mktemp("gw2"))
    async with (
        rest_server(gateway.rest_app()) as one_url,
        rest_server(other.rest_app()) as two_url,
        httpx.AsyncClient(base_url=one_url) as one,
        httpx.AsyncClient(base_url=two_url) as two,
    ):
        admin = await rest_login(one, gateway, is_admin=True)
        theirs = await rest_login(one, gateway)
        me = _ok(await two.get("/v1/users/me", headers=theirs))  # cached on replica two now
        _ok(await one.post(f"/v1/users/{me['id']}/disable", json={}, headers=admin))
        assert (await one.get("/v1/users/me", headers=theirs)).status_code == 401
        start = time.monotonic()
        while (await two.get("/v1/users/me", headers=theirs)).status_code != 401:
            assert time.monotonic() - start < 1.5, "replica two still accepts the token"
            await asyncio.sleep(0.05)
