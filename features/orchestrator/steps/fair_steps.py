# behave ships no type hints, so its decorators are untyped.
# mypy: disable-error-code="untyped-decorator"
"""Steps for fair share and quotas (SPEC §3.9). Fair share runs on a fleet of its own:
an orchestrator on a fresh Postgres schema and a real node (Podman) with two slots, so
no other scenario's queued work runs in between. Regex matcher, reset at the end."""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from behave import given, then, use_step_matcher, when

from cynode.testing import Node, Orchestrator, PgSchema

use_step_matcher("re")

PG_DSN = os.environ.get("CYNODE_BDD_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
PASSWORD = "fair share password"


@dataclass
class Fleet:
    orch: Orchestrator
    node: Node
    schema: PgSchema
    admin: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, dict[str, str]] = field(default_factory=dict)
    tasks: dict[str, list[str]] = field(default_factory=dict)

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.orch.gateway_url, timeout=30)

    def status(self, who: str, task_id: str) -> str:
        with self.http() as client:
            resp = client.get(f"/v1/tasks/{task_id}", headers=self.tokens[who])
        assert resp.status_code == 200, resp.text
        return str(resp.json()["status"])

    def statuses(self, who: str) -> list[str]:
        return [self.status(who, t) for t in self.tasks.get(who, [])]

    def stop(self) -> None:
        # Cancel what is left first: the node then stops without containers to wait for.
        with self.http() as client:
            for who, ids in self.tasks.items():
                for task_id in ids:
                    client.post(f"/v1/tasks/{task_id}/cancel", json={}, headers=self.tokens[who])
        self.node.stop()
        self.orch.stop()
        self.schema.drop()


def _login(client: httpx.Client, handle: str, password: str) -> dict[str, str]:
    resp = client.post("/v1/auth/login", json={"handle": handle, "password": password})
    assert resp.status_code == 200, resp.text
    return {"Authorization": f"Bearer {resp.json()['access_token']}"}


@given(r"a fleet of its own: an orchestrator and a node with (?P<slots>\d+) slots")
def step_fleet(context: Any, slots: str) -> None:
    root = Path(tempfile.mkdtemp(prefix="fair-bdd-"))
    admin_password, psk = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    schema = PgSchema.create("fair", PG_DSN)
    orch = Orchestrator(
        root / "orch",
        admin_password,
        psk,
        database_url=schema.url,
        settings={"CYNODE_REQUIRE_INFERENCE": "false"},
        name="fair-orchestrator",
        ready_timeout=60.0,
    )
    orch.start()
    node = Node(
        root / "node",
        psk,
        control_url=orch.control_url,
        control_grpc=orch.control_grpc,
        slug="fair-node",
        inference_url="",
        settings={"CYNODE_MAX_CONCURRENCY": slots},
        ready_timeout=180.0,
        grace=15.0,
    )
    try:
        node.start()
    except Exception:
        orch.stop()
        schema.drop()
        raise
    fleet = Fleet(orch, node, schema)
    with fleet.http() as client:
        fleet.admin = _login(client, "admin", admin_password)
    context.fleet = fleet
    context.add_cleanup(fleet.stop)


@given(r'users "(?P<a>[^"]+)" and "(?P<b>[^"]+)" on it')
def step_fleet_users(context: Any, a: str, b: str) -> None:
    fleet: Fleet = context.fleet
    with fleet.http() as client:
        for handle in (a, b):
            made = client.post(
                "/v1/users", json={"handle": handle, "password": PASSWORD}, headers=fleet.admin
            )
            assert made.status_code == 201, made.text
            fleet.tokens[handle] = _login(client, handle, PASSWORD)


def _queue(fleet: Fleet, who: str, command: str) -> str:
    with fleet.http() as client:
        resp = client.post("/v1/tasks", json={"commands": [command]}, headers=fleet.tokens[who])
    assert resp.status_code == 201, resp.text
    task_id = str(resp.json()["task_id"])
    fleet.tasks.setdefault(who, []).append(task_id)
    return task_id


@when(r'"(?P<who>[^"]+)" queues (?P<n>\d+) tasks that each sleep (?P<s>\d+) seconds')
def step_queue_many(context: Any, who: str, n: str, s: str) -> None:
    for _ in range(int(n)):
        _queue(context.fleet, who, f"sleep {s}")


@when(r'once (?P<k>\d+) of them run, "(?P<who>[^"]+)" creates one task')
def step_newcomer(context: Any, k: str, who: str) -> None:
    fleet: Fleet = context.fleet
    [owner] = [w for w in fleet.tasks if w != who]
    deadline = time.monotonic() + 120
    while fleet.statuses(owner).count("running") < int(k):
        assert time.monotonic() < deadline, f"{owner}'s tasks never started"
        time.sleep(0.3)
    context.newcomer = _queue(fleet, who, "echo newcomer")
    context.newcomer_at = time.monotonic()
    context.newcomer_owner = who


@then(
    r"that task completes within (?P<t>\d+) seconds, while at least (?P<m>\d+) of "
    r'"(?P<owner>[^"]+)"\'s tasks are still queued'
)
def step_newcomer_done(context: Any, t: str, m: str, owner: str) -> None:
    fleet: Fleet = context.fleet
    while True:
        status = fleet.status(context.newcomer_owner, context.newcomer)
        if status == "completed":
            break
        assert status in ("queued", "running"), status
        waited = time.monotonic() - context.newcomer_at
        assert waited < float(t), f"still {status} after {waited:.1f} s"
        time.sleep(0.2)
    took = time.monotonic() - context.newcomer_at
    queued = fleet.statuses(owner).count("queued")
    print(f"newcomer's task completed in {took:.1f} s; {owner} still had {queued} queued")
    assert took < float(t)
    # The property itself, whatever the machine's speed: it did not wait for the backlog.
    assert queued >= int(m), f"only {queued} of {owner}'s tasks were still queued"


# --- quotas (on the suite's shared orchestrator) ----------------------------------------


@when(r'as admin I set the quotas of "(?P<handle>[^"]+)" to (?P<body>\{.*\})')
def step_set_quotas(context: Any, handle: str, body: str) -> None:
    with httpx.Client(base_url=context.rest_url, timeout=30) as client:
        admin = _login(client, "admin", context.admin_password)
        resp = client.patch(f"/v1/users/{handle}", json={"quotas": json.loads(body)}, headers=admin)
    assert resp.status_code == 200, resp.text


@then(r"my earlier tasks are all still queued")
def step_earlier_queued(context: Any) -> None:
    token = {"Authorization": f"Bearer {context.access_token}"}
    with httpx.Client(base_url=context.rest_url, timeout=30) as client:
        for task_id in context.created:
            resp = client.get(f"/v1/tasks/{task_id}", headers=token)
            assert resp.status_code == 200 and resp.json()["status"] == "queued", resp.text


use_step_matcher("parse")
