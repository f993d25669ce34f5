"""`cynork users|nodes|audit` end to end against a real gateway: a `cynode-orchestrator
serve` process (SQLite in a temp dir) and a simulated node connected to its control
plane over gRPC (in a thread of its own). cynork runs in process, over real HTTP."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from cynode.orchestrator.simnode import SimNode
from cynode.testing import Orchestrator, wait_until
from cynork._app import Seams
from cynork.cli import cli

ADMIN_PASSWORD = "admin password for cynork"
PSK = "psk for the cynork admin test"
NEW_PASSWORD = "the new user's password"


class NodeThread:
    """A SimNode on its own event loop in a thread; jobs finish at once."""

    def __init__(self, target: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        # Made on its own loop: a grpc.aio channel belongs to the loop it was made on.
        self.node: SimNode = self.run(self._make(target))

    @staticmethod
    async def _make(target: str) -> SimNode:
        return SimNode(target, PSK, "cy-node", slots=2)

    def run(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout=60)

    def stop(self) -> None:
        self.run(self.node.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@dataclass
class World:
    orch: Orchestrator
    node: NodeThread
    config_root: Path

    def cy(self, *args: str, who: str = "admin", input: str | None = None) -> Result:
        seams = Seams(environ={}, stderr_tty=False, stdout_tty=False, stdin_tty=False)
        config = self.config_root / who / "config.yaml"
        return CliRunner().invoke(
            cli,
            ["-c", str(config), "--gateway-url", self.orch.gateway_url, *args],
            obj=seams,
            input=input,
        )

    def ok(self, *args: str, who: str = "admin", input: str | None = None) -> Any:
        result = self.cy(*args, "-o", "json", who=who, input=input)
        assert result.exit_code == 0, (args, result.output)
        return json.loads(result.stdout)

    def login(self, who: str, password: str) -> Result:
        return self.cy(
            "auth", "login", "-u", who, "--password-stdin", who=who, input=password + "\n"
        )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("cyadmin")
    orch = Orchestrator(
        root / "orch",
        ADMIN_PASSWORD,
        PSK,
        settings={"CYNODE_REQUIRE_INFERENCE": "false", "CYNODE_LEASE_SECONDS": "20"},
    )
    orch.start()
    node = NodeThread(orch.control_grpc)
    try:
        node.run(node.node.start())
        w = World(orch, node, root / "config")
        assert w.login("admin", ADMIN_PASSWORD).exit_code == 0
        yield w
    finally:
        node.stop()
        orch.stop()


def _task_status(world: World, who: str, task_id: str) -> str:
    return str(world.ok("task", "get", task_id, who=who)["status"])


def test_user_lifecycle(world: World) -> None:
    created = world.ok(
        "users",
        "create",
        "bob",
        "--email",
        "bob@example.org",
        "--password-stdin",
        input=NEW_PASSWORD + "\n",
    )
    assert created["handle"] == "bob" and created["is_active"] is True
    assert world.login("bob", NEW_PASSWORD).exit_code == 0
    assert world.ok("auth", "whoami", who="bob")["handle"] == "bob"
    # A non-admin is refused every admin command (exit 3).
    for args in (("users", "list"), ("nodes", "list"), ("audit", "list")):
        refused = world.cy(*args, who="bob")
        assert refused.exit_code == 3 and "forbidden" in refused.output, args

    listed = world.ok("users", "list")
    assert {u["handle"] for u in listed["users"]} >= {"admin", "bob"}
    table = world.cy("users", "get", "bob")
    assert table.exit_code == 0 and "handle=bob" in table.stdout
    assert "max_queued_tasks=10000" in table.stdout and "queued_tasks=0" in table.stdout

    # Disable: bob's token is refused within a second; asks first without -y.
    declined = world.cy("users", "disable", "bob", input="n\n")
    assert declined.exit_code == 0 and world.ok("users", "get", "bob")["is_active"] is True
    assert world.ok("users", "disable", "bob", "-y") == {"user_id": created["id"], "disabled": True}
    start = time.monotonic()
    gone = world.cy("auth", "whoami", who="bob")
    assert gone.exit_code == 3 and time.monotonic() - start < 1.5
    assert world.login("bob", NEW_PASSWORD).exit_code == 3

    assert world.ok("users", "enable", "bob")["enabled"] is True
    assert world.login("bob", NEW_PASSWORD).exit_code == 0
    reset = world.ok(
        "users", "reset-password", "bob", "-y", "--password-stdin", input="third password!\n"
    )
    assert reset == {"user_id": created["id"], "password_reset": True}
    assert world.login("bob", NEW_PASSWORD).exit_code == 3
    assert world.login("bob", "third password!").exit_code == 0
    revoked = world.ok("users", "revoke-sessions", "bob", "-y")
    assert revoked["revoked"] == 1
    assert world.cy("auth", "whoami", who="bob").exit_code == 3

    assert world.cy("users", "get", "nobody").exit_code == 4
    assert (
        world.cy("users", "create", "bob", "--password-stdin", input="x" * 12 + "\n").exit_code == 5
    )
    assert world.cy("users", "disable", "bob", input="").exit_code == 2  # no answer, no -y

    # The audit log has all of it, newest first, with the admin as actor.
    events = world.ok("audit", "list", "--action", "user_disable", "--outcome", "ok")["events"]
    assert events[0]["handle"] == "admin" and events[0]["detail"]["target_handle"] == "bob"
    failures = world.ok("audit", "list", "--handle", "bob", "--outcome", "failure")["events"]
    assert {e["action"] for e in failures} == {"login"}
    lines = world.cy("audit", "list", "--handle", "bob", "-l", "2")
    assert lines.exit_code == 0 and lines.stdout.splitlines()[-1].startswith("next_cursor=")


def test_node_drain_and_enable(world: World) -> None:
    node = world.node.node
    listed = world.ok("nodes", "list")["nodes"]
    assert [(n["node_slug"], n["status"]) for n in listed] == [("cy-node", "online")]
    got = world.cy("nodes", "get", "cy-node")
    assert got.exit_code == 0 and "status=online" in got.stdout
    drained = world.ok("nodes", "drain", "cy-node", "-y")
    assert drained == {"node_id": node.node_id, "drained": True}
    assert world.ok("nodes", "get", node.node_id)["status"] == "draining"
    task_id = world.ok("task", "create", "--command", "echo hi")["task_id"]
    time.sleep(1.0)  # free slots on a connected node, yet the task waits
    assert _task_status(world, "admin", task_id) == "queued"
    assert node.connected.is_set()
    assert world.ok("nodes", "enable", "cy-node") == {"node_id": node.node_id, "enabled": True}
    wait_until(lambda: _task_status(world, "admin", task_id) == "completed", 30, "the task ran")
    pushed = world.ok("nodes", "refresh-config", "cy-node", "-y")
    wait_until(lambda: pushed["config_version"] in node.config_changes, 10, "ConfigChanged")
    disabled = world.ok("nodes", "disable", "cy-node", "-y")
    assert disabled["disabled"] is True and disabled["requeued"] == 0
    assert world.ok("nodes", "enable", "cy-node")["enabled"] is True
    assert world.cy("nodes", "drain", "ghost", "-y").exit_code == 4
    events = world.ok("audit", "list", "--node-id", node.node_id)["events"]
    assert [e["action"] for e in events][:2] == ["node_enable", "node_disable"]
    assert httpx.get(f"{world.orch.gateway_url}/healthz").status_code == 200
