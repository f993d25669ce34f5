"""A live stack for the contract tests: orchestrator on Postgres, a node, a real Envoy.

Every process runs from this checkout on free ports; Envoy runs deploy/envoy.yaml with
only its ports and the descriptor path rewritten, so what is tested is what ships.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from cynode.testing import (
    BIN,
    PG_DSN,
    ROOT,
    Node,
    Orchestrator,
    PgSchema,
    Proc,
    free_port,
    launch,
    wait_until,
)

__all__ = [
    "BIN",
    "ROOT",
    "Envoy",
    "Stack",
    "launch_envoy",
    "start_envoy",
    "start_node",
    "start_orchestrator",
]

START_TIMEOUT = 60.0
ENVOY_CONFIG = ROOT / "deploy" / "envoy.yaml"


def envoy_config(
    user_rest: int,
    control_rest: int,
    user_grpc: int,
    control_grpc: int,
    admin: int,
    user_http: int,
) -> dict[str, Any]:
    """deploy/envoy.yaml with its ports and descriptor path moved; nothing else changes.
    `user_http` is the gateway's REST port (the door and downloads pass to it)."""
    config: dict[str, Any] = yaml.safe_load(ENVOY_CONFIG.read_text())
    config["admin"]["address"]["socket_address"]["port_value"] = admin
    listen = {"user_rest": user_rest, "controlplane_rest": control_rest}
    upstream = {"user_grpc": user_grpc, "controlplane_grpc": control_grpc, "user_http": user_http}
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
    pg_schema: PgSchema | None = None
    procs: list[Proc] = field(default_factory=list)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        if self.pg_schema is not None:
            self.pg_schema.drop()

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
    stack.pg_schema = PgSchema.create("contract", PG_DSN)
    orch = Orchestrator(
        stack.tmp / "orchestrator",
        stack.admin_password,
        stack.node_psk,
        database_url=stack.pg_schema.url,
        settings={
            "CYNODE_REQUIRE_INFERENCE": "false",
            # Fuzzing sends many bad logins from 127.0.0.1; throttling is tested elsewhere.
            "CYNODE_LOGIN_MAX_FAILURES": "1000000",
        },
        ready_timeout=START_TIMEOUT,
    )
    stack.shim_url = orch.gateway_url
    stack.grpc_target = orch.gateway_grpc
    stack.control_url = orch.control_url
    stack.control_grpc_target = orch.control_grpc
    stack.procs.append(orch.start(wait=False))
    orch.wait_ready()


def start_node(stack: Stack) -> None:
    node = Node(
        stack.tmp / "node",
        stack.node_psk,
        control_url=stack.control_url,
        control_grpc=stack.control_grpc_target,
        slug="contract-node",
        inference_url="",
        ready_timeout=180.0,
    )
    stack.procs.append(node.start(wait=False))
    node.wait_ready()


def _envoy_healthy(admin_url: str) -> bool:
    try:
        return _envoy_clusters_healthy(admin_url)
    except httpx.HTTPError:
        return False


def _envoy_clusters_healthy(admin_url: str) -> bool:
    if httpx.get(f"{admin_url}/ready", timeout=2.0).text.strip() != "LIVE":
        return False
    flags = [
        line
        for line in httpx.get(f"{admin_url}/clusters", timeout=2.0).text.splitlines()
        if "::health_flags::" in line
    ]
    # One host per cluster: the two gRPC ones health-checked, the REST one not (healthy).
    return len(flags) == 3 and all(line.endswith("::healthy") for line in flags)


@dataclass
class Envoy:
    proc: Proc
    url: str
    control_url: str
    admin_url: str


def launch_envoy(tmp: Path, user_grpc: str, control_grpc: str, user_http: str) -> Envoy:
    """A real Envoy running deploy/envoy.yaml in front of those upstreams (host:port),
    once its clusters are healthy. Blocks: from async code, call it in a thread."""
    user, control, admin = free_port(), free_port(), free_port()
    config = envoy_config(
        user,
        control,
        int(user_grpc.rsplit(":", 1)[1]),
        int(control_grpc.rsplit(":", 1)[1]),
        admin,
        int(user_http.rsplit(":", 1)[1]),
    )
    path = tmp / "envoy.json"
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
    proc = launch("envoy", argv, os.environ, tmp / "envoy.log")
    envoy = Envoy(
        proc,
        f"http://127.0.0.1:{user}",
        f"http://127.0.0.1:{control}",
        f"http://127.0.0.1:{admin}",
    )
    try:
        wait_until(lambda: _envoy_healthy(envoy.admin_url), START_TIMEOUT, "envoy", procs=[proc])
    except BaseException:
        proc.stop()
        raise
    return envoy


def start_envoy(stack: Stack) -> None:
    envoy = launch_envoy(stack.tmp, stack.grpc_target, stack.control_grpc_target, stack.shim_url)
    stack.procs.append(envoy.proc)
    stack.envoy_url = envoy.url
    stack.envoy_control_url = envoy.control_url
    stack.envoy_admin_url = envoy.admin_url
