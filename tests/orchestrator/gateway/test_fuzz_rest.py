"""Random JSON bodies and query strings at every gateway REST route: never a 5xx."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from cynode.orchestrator.app import Gateway
from tests.orchestrator.gatewaykit import make_gateway, rest_login

ROUTES = [
    ("POST", "/v1/auth/login"),
    ("POST", "/v1/auth/refresh"),
    ("POST", "/v1/auth/logout"),
    ("GET", "/v1/users/me"),
    ("POST", "/v1/tasks"),
    ("GET", "/v1/tasks"),
    ("GET", "/v1/tasks/{id}"),
    ("GET", "/v1/tasks/{id}/result"),
    ("POST", "/v1/tasks/{id}/cancel"),
    ("GET", "/v1/tasks/{id}/logs"),
    ("GET", "/v1/tasks/{id}/watch"),
    ("GET", "/v1/tasks/{id}/artifacts"),
    ("GET", "/v1/tasks/{id}/artifacts/01ARZ3NDEKTSV4RRFFQ69G5FAV"),
    ("DELETE", "/v1/tasks/{id}"),
    ("GET", "/v1/users"),
    ("POST", "/v1/users"),
    ("GET", "/v1/users/{id}"),
    ("PATCH", "/v1/users/{id}"),
    ("POST", "/v1/users/{id}/disable"),
    ("POST", "/v1/users/{id}/enable"),
    ("POST", "/v1/users/{id}/reset_password"),
    ("POST", "/v1/users/{id}/revoke_sessions"),
    ("GET", "/v1/audit"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
]
GATEWAY_DOCUMENT = Path(__file__).resolve().parents[3] / "gen" / "openapi" / "gateway.openapi.json"
# NodeAdminService comes with the control plane, which this gateway runs without;
# tests/contract/test_schemathesis.py fuzzes it on a live orchestrator.
CONTROL_PLANE_ROUTES = {
    ("GET", "/v1/nodes"),
    ("GET", "/v1/nodes/{node_id}"),
    ("POST", "/v1/nodes/{node_id}/drain"),
    ("POST", "/v1/nodes/{node_id}/disable"),
    ("POST", "/v1/nodes/{node_id}/enable"),
    ("POST", "/v1/nodes/{node_id}/refresh_config"),
}
FIELDS = [
    "handle",
    "password",
    "refresh_token",
    "prompt",
    "script",
    "commands",
    "input_mode",
    "task_name",
    "use_inference",
    "timeout_seconds",
    "image",
    "attachments",
    "status",
    "limit",
    "cursor",
    "stream",
    "task_id",
    "email",
    "is_admin",
    "weight",
    "quotas",
    "max_queued_tasks",
    "action",
    "outcome",
    "since",
    "node_id",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=40),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6),
    json_values,
)
queries = st.dictionaries(st.sampled_from(FIELDS), st.text(max_size=30), max_size=4)
ids = st.one_of(
    st.text(min_size=1, max_size=30),
    st.just("01ARZ3NDEKTSV4RRFFQ69G5FAV"),
)


@pytest.fixture(scope="module")
async def fuzz_app(
    db_engine: AsyncEngine, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Any, Gateway]]:
    gw = make_gateway(db_engine, tmp_path_factory.mktemp("fz"), require_inference=False)
    yield gw.rest_app(), gw


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    route=st.sampled_from(ROUTES),
    body=bodies,
    query=queries,
    task_id=ids,
    authed=st.sampled_from(["", "user", "admin"]),
)
async def test_no_route_answers_5xx(
    fuzz_app: tuple[Any, Gateway],
    route: tuple[str, str],
    body: object,
    query: dict[str, str],
    task_id: str,
    authed: str,
) -> None:
    app, gw = fuzz_app
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://fuzz") as http:
        headers = await _auth(http, gw, authed == "admin") if authed else {}
        method, path = route
        resp = await http.request(
            method,
            path.replace("{id}", quote(task_id, safe="")),
            params=query,
            content=json.dumps(body).encode(),
            headers={**headers, "content-type": "application/json"},
        )
    assert resp.status_code < 500, (route, body, query, resp.text)


def test_routes_are_every_route_of_the_gateway() -> None:
    document = json.loads(GATEWAY_DOCUMENT.read_text())
    documented = {
        (method.upper(), path.replace("{task_id}", "{id}").replace("{user_id}", "{id}"))
        for path, operations in document["paths"].items()
        for method in operations
    }
    assert documented - CONTROL_PLANE_ROUTES <= set(ROUTES), documented - set(ROUTES)


_TOKENS: dict[tuple[int, bool], dict[str, str]] = {}


async def _auth(http: httpx.AsyncClient, gw: Gateway, admin: bool) -> dict[str, str]:
    """A user's or an admin's token (admins get past UserService's gate)."""
    key = (id(gw), admin)
    if key not in _TOKENS:
        _TOKENS[key] = await rest_login(http, gw, is_admin=admin)
    return _TOKENS[key]
