"""GET /v1/audit (SPEC §2.10) over REST through a real socket, on SQLite and Postgres:
logins, failed logins, logouts and admin acts are rows with who, what, when, from where
and the outcome; filters and cursor paging; admins only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from cynode.orchestrator.app import Gateway
from tests.orchestrator.gatewaykit import (
    PASSWORD,
    gateway,
    http,
    rest_login,
    rest_url,
    unique,
)

__all__ = ["gateway", "http", "rest_url"]  # the fixtures this module uses


async def _events(http: httpx.AsyncClient, auth: dict[str, str], **params: Any) -> dict[str, Any]:
    resp = await http.get("/v1/audit", params=params, headers=auth)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert isinstance(body, dict)
    return body


async def test_logins_logouts_and_admin_acts_are_listed(
    http: httpx.AsyncClient, gateway: Gateway
) -> None:
    admin = await rest_login(http, gateway, is_admin=True)
    start = datetime.now(UTC) - timedelta(seconds=5)
    handle = unique("aud")
    made = await http.post(
        "/v1/users", json={"handle": handle, "password": PASSWORD}, headers=admin
    )
    assert made.status_code == 201
    bad = await http.post("/v1/auth/login", json={"handle": handle, "password": "wrong pw!"})
    assert bad.status_code == 401
    pair = (await http.post("/v1/auth/login", json={"handle": handle, "password": PASSWORD})).json()
    out = await http.post("/v1/auth/logout", json={"refresh_token": pair["refresh_token"]})
    assert out.status_code == 204

    mine = (await _events(http, admin, handle=handle))["events"]
    assert [(e["action"], e["outcome"]) for e in mine] == [
        ("logout", "ok"),
        ("login", "ok"),
        ("login", "failure"),
    ]
    failure = mine[-1]
    assert failure["detail"] == {"reason": "bad_password"}
    assert failure["client"] == "127.0.0.1" and failure["at"].endswith("Z")
    assert "wrong pw!" not in str(mine) and PASSWORD not in str(mine)
    created = (await _events(http, admin, action="user_create", outcome="ok"))["events"]
    act = next(e for e in created if e["detail"].get("target_handle") == handle)
    assert act["handle"] != handle and act["user_id"]  # the admin acted on the user
    # since: nothing before the start of this test.
    recent = await _events(http, admin, since=start.isoformat().replace("+00:00", "Z"))
    assert all(e["at"] >= start.isoformat()[:19] for e in recent["events"])
    assert (await _events(http, admin, action="x" * 65))["events"] == []
    # A logout with a token nobody holds is a failure row, with no secret in it.
    gone = await http.post("/v1/auth/logout", json={"refresh_token": "not-a-token-" + handle})
    assert gone.status_code == 401
    failed = (await _events(http, admin, action="logout", outcome="failure", limit=50))["events"]
    assert failed and failed[0]["detail"] == {"reason": "unknown_token"}
    assert all(handle not in str(e) for e in failed)


async def test_cursor_pages_through_everything_newest_first(
    http: httpx.AsyncClient, gateway: Gateway
) -> None:
    admin = await rest_login(http, gateway, is_admin=True)
    handle = unique("pg")
    for _ in range(5):
        await http.post("/v1/auth/login", json={"handle": handle, "password": "nope nope"})
    seen: list[str] = []
    cursor = ""
    while True:
        page = await _events(http, admin, handle=handle, limit=2, cursor=cursor)
        assert len(page["events"]) <= 2
        seen += [e["id"] for e in page["events"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 5 and seen == sorted(seen, reverse=True)
    bad = await http.get("/v1/audit", params={"cursor": "garbage"}, headers=admin)
    assert bad.status_code == 400
    assert (await http.get("/v1/audit", params={"limit": -1}, headers=admin)).status_code == 400


async def test_admins_only(http: httpx.AsyncClient, gateway: Gateway) -> None:
    plain = await rest_login(http, gateway)
    resp = await http.get("/v1/audit", headers=plain)
    assert resp.status_code == 403
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert (await http.get("/v1/audit")).status_code == 401
