"""Every administrative route of the running gateway, walked from its own OpenAPI
document: a non-admin gets 403 problem+json on each (and nothing changes), no token
gets 401, an admin gets past the gate."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from cynode.orchestrator.app import Orchestrator, serve_control_plane
from tests.orchestrator.gatewaykit import PASSWORD, make_gateway, rest_login, unique


def _admin_routes(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if op.get("x-cynode-admin")
    ]


async def test_every_admin_route_refuses_non_admins(db_engine: AsyncEngine, tmp_path: Path) -> None:
    gw = make_gateway(
        db_engine,
        tmp_path,
        gateway_rest_port=0,
        gateway_grpc_port=0,
        control_rest_port=0,
        control_grpc_port=0,
        node_psk="test-psk-0123456789",
    )
    orch = Orchestrator(gw, serve_control_plane)
    await orch.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{orch.rest_port}") as http:
            doc = (await http.get("/openapi.json")).json()
            routes = _admin_routes(doc)
            # User and node administration and the audit log, at least.
            tags = {op["tags"][0] for _, _, op in routes}
            assert {"UserService", "NodeAdminService", "AuditService"} <= tags, tags
            plain = await rest_login(http, gw)
            admin = await rest_login(http, gw, is_admin=True)
            victim = (
                await http.post(
                    "/v1/users",
                    json={"handle": unique("victim"), "password": PASSWORD},
                    headers=admin,
                )
            ).json()
            before = (await http.get(f"/v1/users/{victim['id']}", headers=admin)).json()
            for method, template, _ in routes:
                path = re.sub(r"\{[^}]+\}", victim["id"], template)
                body: dict[str, str] | None = {} if method != "GET" else None
                denied = await http.request(method, path, json=body, headers=plain)
                assert denied.status_code == 403, (method, template, denied.text)
                assert denied.headers["content-type"].startswith("application/problem+json")
                assert denied.json()["type"] == "urn:cynode:problem:permission-denied"
                anonymous = await http.request(method, path, json=body)
                assert anonymous.status_code == 401, (method, template)
                allowed = await http.request(method, path, json=body, headers=admin)
                assert allowed.status_code != 403, (method, template, allowed.text)
                if method != "GET":
                    # Undo what the admin's call did, so later routes act on the same user.
                    await http.post(f"/v1/users/{victim['id']}/enable", json={}, headers=admin)
            # The refused calls changed nothing the admin's did not.
            after = (await http.get(f"/v1/users/{victim['id']}", headers=admin)).json()
            assert after["handle"] == before["handle"] and after["is_admin"] is False
    finally:
        await orch.stop()
