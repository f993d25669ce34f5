"""behave hooks for features/orchestrator: a REAL `cynode-orchestrator serve` on
Postgres (a fresh schema in database `test` per run), on free ports.

For step modules the context carries:
- rest_url, grpc_target: the user gateway (REST, gRPC)
- control_rest_url, control_grpc_target, node_psk: the control plane's ports and key
- admin_password, db_url, orchestrator_env (the env the server was started with)
- start_orchestrator(extra_env) -> Orchestrator: another server on the same database
  with extra settings, stopped after the scenario (for settings a scenario varies)

CYNODE_BDD_PG_DSN overrides the Postgres server (default postgresql://postgres@127.0.0.1:5432/test).
Process logs are kept in a temp dir and printed when start-up fails.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import asyncpg
import httpx

from tests.fixtures.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
START_TIMEOUT = 60.0
PG_DSN = os.environ.get("CYNODE_BDD_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@dataclass
class Orchestrator:
    proc: subprocess.Popen[bytes]
    log: Path
    log_handle: IO[bytes]
    rest_url: str
    grpc_target: str
    control_rest_url: str
    control_grpc_target: str
    env: dict[str, str]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log_handle.close()

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _pg(sql: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(PG_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def start_orchestrator(context: Any, extra_env: dict[str, str] | None = None) -> Orchestrator:
    tmp = Path(context.orch_tmp)
    ports = [free_port() for _ in range(4)]
    # A counter object, not an int: attributes set during a scenario vanish after it.
    name = f"orchestrator-{next(context.orch_counter)}"
    data_dir = tmp / name
    data_dir.mkdir()
    env = {
        **os.environ,
        "ADMIN_PASSWORD": context.admin_password,
        "NODE_PSK": context.node_psk,
        "CYNODE_JWT_SECRET": context.jwt_secret,
        "CYNODE_DATA_DIR": str(data_dir),
        "CYNODE_DATABASE_URL": context.db_url,
        "CYNODE_GATEWAY_REST_PORT": str(ports[0]),
        "CYNODE_GATEWAY_GRPC_PORT": str(ports[1]),
        "CYNODE_CONTROL_REST_PORT": str(ports[2]),
        "CYNODE_CONTROL_GRPC_PORT": str(ports[3]),
        # Every scenario logs in from 127.0.0.1; the throttling scenario lowers this.
        "CYNODE_LOGIN_MAX_FAILURES": "1000",
        **(extra_env or {}),
    }
    log = tmp / f"{name}.log"
    handle = log.open("wb")
    proc = subprocess.Popen(
        [str(BIN / "cynode-orchestrator"), "serve"],
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    orch = Orchestrator(
        proc,
        log,
        handle,
        rest_url=f"http://127.0.0.1:{ports[0]}",
        grpc_target=f"127.0.0.1:{ports[1]}",
        control_rest_url=f"http://127.0.0.1:{ports[2]}",
        control_grpc_target=f"127.0.0.1:{ports[3]}",
        env=env,
    )
    context.orch_procs.append(orch)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"cynode-orchestrator exited with {proc.returncode}:\n{orch.tail()}")
        try:
            if httpx.get(f"{orch.rest_url}/healthz", timeout=2.0).status_code == 200:
                return orch
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"cynode-orchestrator did not answer /healthz:\n{orch.tail()}")


def before_all(context: Any) -> None:
    context.orch_tmp = tempfile.mkdtemp(prefix="orch-bdd-")
    context.orch_procs = []
    context.orch_counter = itertools.count()
    context.admin_password = secrets.token_urlsafe(18)
    context.node_psk = secrets.token_urlsafe(18)
    context.jwt_secret = secrets.token_urlsafe(32)
    context.pg_schema = f"bdd_{secrets.token_hex(6)}"
    _pg(f'CREATE SCHEMA "{context.pg_schema}"')
    context.db_url = f"{PG_DSN}?search_path={context.pg_schema}"
    main = start_orchestrator(context)
    context.orchestrator = main
    context.rest_url = main.rest_url
    context.grpc_target = main.grpc_target
    context.control_rest_url = main.control_rest_url
    context.control_grpc_target = main.control_grpc_target
    context.orchestrator_env = main.env
    context.start_orchestrator = lambda extra=None: start_orchestrator(context, extra)


def after_scenario(context: Any, scenario: Any) -> None:
    # Servers a scenario started for itself stop with it; the main one stays.
    for orch in list(context.orch_procs):
        if orch is not context.orchestrator:
            orch.stop()
            context.orch_procs.remove(orch)
    if scenario.status == "failed":
        context.failed_any = True


def after_all(context: Any) -> None:
    for orch in reversed(getattr(context, "orch_procs", [])):
        orch.stop()
    if getattr(context, "pg_schema", None):
        _pg(f'DROP SCHEMA IF EXISTS "{context.pg_schema}" CASCADE')
    if getattr(context, "failed_any", False):
        print(f"orchestrator suite: logs kept in {context.orch_tmp}")
    else:
        shutil.rmtree(context.orch_tmp, ignore_errors=True)
