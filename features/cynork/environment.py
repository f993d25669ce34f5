"""behave hooks for features/cynork: a REAL orchestrator (and, for @node, a real node).

What this expects (to be confirmed by the lead when the servers land):

- `cynode-orchestrator serve` in .venv/bin, configured by environment variables:
  ADMIN_PASSWORD (bootstrap user `admin`), NODE_PSK, CYNODE_DATA_DIR,
  CYNODE_DATABASE_URL (default here: a SQLite file in a temp dir; set
  CYNORK_BDD_DATABASE_URL for Postgres), CYNODE_GATEWAY_REST_PORT / _GRPC_PORT,
  CYNODE_CONTROL_REST_PORT / _GRPC_PORT (free ports picked here), and
  CYNODE_REQUIRE_INFERENCE=false so `cynork status` is ready without an inference node
  (set CYNORK_BDD_REQUIRE_INFERENCE=true to keep the strict readiness).
  Ready when GET /healthz on the gateway REST port answers 200.
- `cynode-node` in .venv/bin for @node scenarios (a task must actually run), configured
  by CYNODE_ORCHESTRATOR_URL (control plane REST), CYNODE_CONTROL_PLANE_GRPC
  (host:port), NODE_PSK, CYNODE_NODE_SLUG, CYNODE_NODE_STATE_DIR,
  CYNODE_WORKER_API_PORT, CYNODE_INFERENCE_MODE=none, CONTAINERS_CONF; ready when its
  worker API answers GET /readyz with 200. CYNORK_BDD_NODE=0 skips starting it, and
  @node scenarios then fail with that reason (they are never silently skipped).
- CYNORK_BDD_GATEWAY_URL (with ADMIN_PASSWORD) points the suite at a gateway that is
  already running instead; nothing is started then.

Each scenario gets its own HOME, so cynork's config (~/.config/cynork) never leaks
between scenarios. Process logs stay in the temp dir, printed when start-up fails.
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

from cynode.testing import BIN, Node, NotReady, Orchestrator, ProcessExited


def _orchestrator(context: Any, name: str, extra_env: dict[str, str] | None = None) -> Orchestrator:
    """A `cynode-orchestrator serve` with its own data dir (SQLite there unless the
    env says otherwise), once /healthz answers."""
    orch = Orchestrator(
        Path(context.cynork_tmp) / name,
        context.admin_password,
        context.node_psk,
        settings={
            "CYNODE_REQUIRE_INFERENCE": os.environ.get("CYNORK_BDD_REQUIRE_INFERENCE", "false"),
            **(extra_env or {}),
        },
        name=name,
        ready_timeout=60.0,
    )
    context.cynork_procs.append(orch)
    orch.start()
    return orch


def _start_orchestrator(context: Any) -> None:
    context.admin_password = secrets.token_urlsafe(18)
    context.node_psk = secrets.token_urlsafe(18)
    database = os.environ.get("CYNORK_BDD_DATABASE_URL")
    orch = _orchestrator(
        context, "orchestrator", {"CYNODE_DATABASE_URL": database} if database else None
    )
    context.gateway_url = orch.gateway_url
    context.orchestrator = orch


def _start_node(context: Any) -> None:
    if os.environ.get("CYNORK_BDD_NODE", "1") == "0":
        context.node_error = "no node started (CYNORK_BDD_NODE=0)"
        return
    orch = context.orchestrator
    node = Node(
        Path(context.cynork_tmp) / "node",
        context.node_psk,
        control_url=orch.control_url,
        control_grpc=orch.control_grpc,
        slug="bdd-cynork-node",
        inference_url="",
        ready_timeout=180.0,
        grace=15.0,
    )
    context.cynork_procs.append(node)
    try:
        node.start()
    except (NotReady, ProcessExited) as exc:
        context.node_error = f"the node did not become ready: {exc}"


def _own_gateway_starter(context: Any) -> Any:
    """`context.start_own_gateway(env)`: another orchestrator for one scenario (settings
    such as login throttling that would disturb the shared one); stopped after it."""
    count = itertools.count(1)

    def start(extra_env: dict[str, str]) -> str:
        orch = _orchestrator(context, f"own-gateway-{next(count)}", extra_env)
        context.own_gateways.append(orch)
        return orch.gateway_url

    return start


def before_all(context: Any) -> None:
    context.start_own_gateway = _own_gateway_starter(context)
    context.own_gateways = []
    context.shared_gateway_url = None
    context.cynork_bin = BIN / "cynork"
    context.cynork_tmp = tempfile.mkdtemp(prefix="cynork-bdd-")
    context.cynork_procs = []
    context.node_error = None
    external = os.environ.get("CYNORK_BDD_GATEWAY_URL")
    if external:
        context.gateway_url = external.rstrip("/")
        context.admin_password = os.environ["ADMIN_PASSWORD"]
        return
    _start_orchestrator(context)
    _start_node(context)
    context.shared_gateway_url = context.gateway_url


def before_scenario(context: Any, scenario: Any) -> None:
    if "node" in scenario.effective_tags and context.node_error:
        raise RuntimeError(f"this scenario runs a task and needs a node: {context.node_error}")
    context.home = Path(tempfile.mkdtemp(prefix="home-", dir=context.cynork_tmp))
    context.task_id = None
    context.result = None


def after_scenario(context: Any, scenario: Any) -> None:
    listener = getattr(context, "listener", None)
    if listener is not None:
        listener.close()
        context.listener = None
    while context.own_gateways:
        context.own_gateways.pop().stop(15.0)
    if context.shared_gateway_url is not None:
        context.gateway_url = context.shared_gateway_url


def after_all(context: Any) -> None:
    for launched in reversed(getattr(context, "cynork_procs", [])):
        launched.stop(15.0)
    failed = getattr(context, "failed", False)
    if failed:
        print(f"cynork suite: logs kept in {context.cynork_tmp}")
    else:
        shutil.rmtree(context.cynork_tmp, ignore_errors=True)
