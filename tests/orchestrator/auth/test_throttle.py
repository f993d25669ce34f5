"""Login throttling per client and per handle: 429 with Retry-After over REST,
RESOURCE_EXHAUSTED over gRPC."""

from __future__ import annotations

from pathlib import Path

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from cynode.orchestrator.auth import LoginThrottle, create_user
from tests.orchestrator.gatewaykit import PASSWORD, make_gateway, rest_server, unique


def test_window_counts_and_expires() -> None:
    now = [0.0]
    t = LoginThrottle(3, 60, clock=lambda: now[0])
    for _ in range(2):
        t.failure("a", "b")
    assert t.retry_after("a") == 0
    t.failure("a")
    assert t.retry_after("a") == 60 and t.retry_after("b") == 0
    now[0] = 30.5
    assert t.retry_after("a", "b") == 30
    now[0] = 61
    assert t.retry_after("a") == 0
    t.failure("c")
    t.success("c")
    assert t.retry_after("c") == 0


def test_key_flood_is_bounded() -> None:
    now = [0.0]
    t = LoginThrottle(2, 10, clock=lambda: now[0], max_keys=10)
    for i in range(50):
        t.failure(f"k{i}")
    assert len(t._failures) <= 10
    now[0] = 100
    t.failure("late")
    assert t.retry_after("k1") == 0


async def test_rest_429_with_retry_after_then_correct_password_still_waits(
    db_engine: AsyncEngine, tmp_path: Path
) -> None:
    gw = make_gateway(db_engine, tmp_path, login_max_failures=3, login_window_seconds=120)
    handle = unique("thr")
    await create_user(gw.factory, gw.passwords, handle, PASSWORD)
    async with rest_server(gw.rest_app()) as url, httpx.AsyncClient(base_url=url) as http:
        for _ in range(3):
            r = await http.post("/v1/auth/login", json={"handle": handle, "password": "bad"})
            assert r.status_code == 401
        r = await http.post("/v1/auth/login", json={"handle": handle, "password": PASSWORD})
        assert r.status_code == 429, r.text
        assert 1 <= int(r.headers["retry-after"]) <= 120
        assert r.headers["content-type"].startswith("application/problem+json")
        # Per client too: another handle from the same address is throttled as well.
        r = await http.post("/v1/auth/login", json={"handle": "other", "password": "x"})
        assert r.status_code == 429
