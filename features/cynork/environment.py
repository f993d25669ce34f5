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
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
START_TIMEOUT = 60.0
NODE_TIMEOUT = 180.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}:\n{_tail(log)}")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f}s:\n{_tail(log)}")


def _start(
    context: Any, name: str, argv: list[str], env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], Path]:
    log = Path(context.cynork_tmp) / f"{name}.log"
    handle: IO[bytes] = log.open("wb")
    proc = subprocess.Popen(
        argv, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
    )
    context.cynork_procs.append((proc, handle))
    return proc, log


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _orchestrator(
    context: Any, name: str, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str, tuple[int, int]]:
    """A `cynode-orchestrator serve` with its own data dir; (process, gateway URL,
    control plane REST and gRPC ports) once /healthz answers."""
    data_dir = Path(context.cynork_tmp) / name
    ports = {key: _free_port() for key in ("gw_rest", "gw_grpc", "cp_rest", "cp_grpc")}
    env = {
        **os.environ,
        "ADMIN_PASSWORD": context.admin_password,
        "NODE_PSK": context.node_psk,
        "CYNODE_DATA_DIR": str(data_dir),
        "CYNODE_DATABASE_URL": f"sqlite:///{data_dir}/cynode.db",
        "CYNODE_GATEWAY_REST_PORT": str(ports["gw_rest"]),
        "CYNODE_GATEWAY_GRPC_PORT": str(ports["gw_grpc"]),
        "CYNODE_CONTROL_REST_PORT": str(ports["cp_rest"]),
        "CYNODE_CONTROL_GRPC_PORT": str(ports["cp_grpc"]),
        "CYNODE_REQUIRE_INFERENCE": os.environ.get("CYNORK_BDD_REQUIRE_INFERENCE", "false"),
        **(extra_env or {}),
    }
    data_dir.mkdir()
    proc, log = _start(context, name, [str(BIN / "cynode-orchestrator"), "serve"], env)
    url = f"http://127.0.0.1:{ports['gw_rest']}"
    _wait_http(f"{url}/healthz", proc, log, START_TIMEOUT)
    return proc, url, (ports["cp_rest"], ports["cp_grpc"])


def _start_orchestrator(context: Any) -> None:
    context.admin_password = secrets.token_urlsafe(18)
    context.node_psk = secrets.token_urlsafe(18)
    database = os.environ.get("CYNORK_BDD_DATABASE_URL")
    _proc, context.gateway_url, context.control_ports = _orchestrator(
        context, "orchestrator", {"CYNODE_DATABASE_URL": database} if database else None
    )


def _start_node(context: Any) -> None:
    if os.environ.get("CYNORK_BDD_NODE", "1") == "0":
        context.node_error = "no node started (CYNORK_BDD_NODE=0)"
        return
    tmp = Path(context.cynork_tmp)
    cp_rest, cp_grpc = context.control_ports
    worker_port = _free_port()
    env = {
        **os.environ,
        "NODE_PSK": context.node_psk,
        "CYNODE_ORCHESTRATOR_URL": f"http://127.0.0.1:{cp_rest}",
        "CYNODE_CONTROL_PLANE_GRPC": f"127.0.0.1:{cp_grpc}",
        "CYNODE_NODE_SLUG": "bdd-cynork-node",
        "CYNODE_NODE_STATE_DIR": str(tmp / "node"),
        "CYNODE_WORKER_API_PORT": str(worker_port),
        "CYNODE_INFERENCE_MODE": "none",
        "CONTAINERS_CONF": str(ROOT / "deploy" / "podman" / "containers.conf"),
    }
    proc, log = _start(context, "node", [str(BIN / "cynode-node"), "run"], env)
    try:
        _wait_http(f"http://127.0.0.1:{worker_port}/readyz", proc, log, NODE_TIMEOUT)
    except RuntimeError as exc:
        context.node_error = f"the node did not become ready: {exc}"


def _own_gateway_starter(context: Any) -> Any:
    """`context.start_own_gateway(env)`: another orchestrator for one scenario (settings
    such as login throttling that would disturb the shared one); stopped after it."""
    count = itertools.count(1)

    def start(extra_env: dict[str, str]) -> str:
        proc, url, _ = _orchestrator(context, f"own-gateway-{next(count)}", extra_env)
        context.own_gateways.append(proc)
        return url

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
        _stop(context.own_gateways.pop())
    if context.shared_gateway_url is not None:
        context.gateway_url = context.shared_gateway_url


def after_all(context: Any) -> None:
    for proc, handle in reversed(getattr(context, "cynork_procs", [])):
        _stop(proc)
        handle.close()
    failed = getattr(context, "failed", False)
    if failed:
        print(f"cynork suite: logs kept in {context.cynork_tmp}")
    else:
        shutil.rmtree(context.cynork_tmp, ignore_errors=True)
