"""A live stack for the contract tests: orchestrator on Postgres, a node, a real Envoy.

Every process runs from this checkout on free ports; Envoy runs deploy/envoy.yaml with
only its ports and the descriptor path rewritten, so what is tested is what ships.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import asyncpg
import httpx
import yaml

from tests.fixtures.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
PG_DSN = os.environ.get("CYNODE_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
START_TIMEOUT = 60.0
ENVOY_CONFIG = ROOT / "deploy" / "envoy.yaml"


def pg_execute(sql: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(PG_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    # In a thread of its own: asyncio.run would unset pytest-asyncio's loop here.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    handle: IO[bytes]

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.handle.close()


def spawn(name: str, argv: list[str], env: dict[str, str], logdir: Path) -> Proc:
    log = logdir / f"{name}.log"
    handle = log.open("wb")
    proc = subprocess.Popen(
        argv, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT
    )
    return Proc(name, proc, log, handle)


def wait_until(proc: Proc, ready: Callable[[], bool], timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.proc.returncode}:\n{proc.tail()}")
        try:
            if ready():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{proc.name} was not ready within {timeout:.0f}s:\n{proc.tail()}")


def http_ok(url: str) -> bool:
    return httpx.get(url, timeout=2.0).status_code == 200


def envoy_config(
    user_rest: int, control_rest: int, user_grpc: int, control_grpc: int, admin: int
) -> dict[str, Any]:
    """deploy/envoy.yaml with its ports and descriptor path moved; nothing else changes."""
    config: dict[str, Any] = yaml.safe_load(ENVOY_CONFIG.read_text())
    config["admin"]["address"]["socket_address"]["port_value"] = admin
    listen = {"user_rest": user_rest, "controlplane_rest": control_rest}
    upstream = {"user_grpc": user_grpc, "controlplane_grpc": control_grpc}
    for listener in config["static_resources"]["listeners"]:
        listener["address"]["socket_address"]["port_value"] = listen[listener["name"]]
        manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
        for item in manager["http_filters"]:
            typed = item["typed_config"]
            if "proto_descriptor" in typed:
                typed["proto_descriptor"] = str(ROOT / typed["proto_descriptor"])
    for cluster in config["static_resources"]["clusters"]:
        endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        endpoint["address"]["socket_address"]["port_value"] = upstream[cluster["name"]]
    return config


@dataclass
class Stack:
    """URLs of the running stack and the credentials to use it."""

    tmp: Path
    admin_password: str
    node_psk: str
    shim_url: str = ""
    grpc_target: str = ""
    control_url: str = ""
    control_grpc_target: str = ""
    envoy_url: str = ""
    envoy_control_url: str = ""
    envoy_admin_url: str = ""
    pg_schema: str = ""
    procs: list[Proc] = field(default_factory=list)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        if self.pg_schema:
            pg_execute(f'DROP SCHEMA IF EXISTS "{self.pg_schema}" CASCADE')

    def token(self) -> str:
        response = httpx.post(
            f"{self.shim_url}/v1/auth/login",
            json={"handle": "admin", "password": self.admin_password},
            timeout=10,
        )
        response.raise_for_status()
        token: str = response.json()["access_token"]
        return token


def start_orchestrator(stack: Stack) -> None:
    ports = [free_port() for _ in range(4)]
    stack.pg_schema = f"contract_{secrets.token_hex(6)}"
    pg_execute(f'CREATE SCHEMA "{stack.pg_schema}"')
    data = stack.tmp / "orchestrator"
    data.mkdir()
    env = {
        **os.environ,
        "ADMIN_PASSWORD": stack.admin_password,
        "NODE_PSK": stack.node_psk,
        "CYNODE_DATA_DIR": str(data),
        "CYNODE_DATABASE_URL": f"{PG_DSN}?search_path={stack.pg_schema}",
        "CYNODE_GATEWAY_REST_PORT": str(ports[0]),
        "CYNODE_GATEWAY_GRPC_PORT": str(ports[1]),
        "CYNODE_CONTROL_REST_PORT": str(ports[2]),
        "CYNODE_CONTROL_GRPC_PORT": str(ports[3]),
        "CYNODE_REQUIRE_INFERENCE": "false",
        # Fuzzing sends many bad logins from 127.0.0.1; throttling is tested elsewhere.
        "CYNODE_LOGIN_MAX_FAILURES": "1000000",
    }
    proc = spawn("orchestrator", [str(BIN / "cynode-orchestrator"), "serve"], env, stack.tmp)
    stack.procs.append(proc)
    stack.shim_url = f"http://127.0.0.1:{ports[0]}"
    stack.grpc_target = f"127.0.0.1:{ports[1]}"
    stack.control_url = f"http://127.0.0.1:{ports[2]}"
    stack.control_grpc_target = f"127.0.0.1:{ports[3]}"
    wait_until(proc, lambda: http_ok(f"{stack.shim_url}/healthz"))


def start_node(stack: Stack) -> None:
    worker = free_port()
    env = {
        **os.environ,
        "NODE_PSK": stack.node_psk,
        "CYNODE_ORCHESTRATOR_URL": stack.control_url,
        "CYNODE_CONTROL_PLANE_GRPC": stack.control_grpc_target,
        "CYNODE_NODE_SLUG": "contract-node",
        "CYNODE_NODE_STATE_DIR": str(stack.tmp / "node"),
        "CYNODE_WORKER_API_PORT": str(worker),
        "CYNODE_INFERENCE_MODE": "none",
        "CONTAINERS_CONF": str(ROOT / "deploy" / "podman" / "containers.conf"),
    }
    proc = spawn("node", [str(BIN / "cynode-node"), "run"], env, stack.tmp)
    stack.procs.append(proc)
    wait_until(proc, lambda: http_ok(f"http://127.0.0.1:{worker}/readyz"), timeout=180)


def _envoy_healthy(admin_url: str) -> bool:
    if httpx.get(f"{admin_url}/ready", timeout=2.0).text.strip() != "LIVE":
        return False
    flags = [
        line
        for line in httpx.get(f"{admin_url}/clusters", timeout=2.0).text.splitlines()
        if "::health_flags::" in line
    ]
    return len(flags) == 2 and all(line.endswith("::healthy") for line in flags)


def start_envoy(stack: Stack) -> None:
    user, control, admin = free_port(), free_port(), free_port()
    config = envoy_config(
        user,
        control,
        int(stack.grpc_target.rsplit(":", 1)[1]),
        int(stack.control_grpc_target.rsplit(":", 1)[1]),
        admin,
    )
    path = stack.tmp / "envoy.json"
    path.write_text(json.dumps(config))
    argv = [
        str(BIN / "envoy"),
        "-c",
        str(path),
        "--disable-hot-restart",
        "--log-level",
        "warning",
        "--base-id",
        str(admin),
    ]
    proc = spawn("envoy", argv, dict(os.environ), stack.tmp)
    stack.procs.append(proc)
    stack.envoy_url = f"http://127.0.0.1:{user}"
    stack.envoy_control_url = f"http://127.0.0.1:{control}"
    stack.envoy_admin_url = f"http://127.0.0.1:{admin}"
    wait_until(proc, lambda: _envoy_healthy(stack.envoy_admin_url))
