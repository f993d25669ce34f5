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

import itertools
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

from cynode.testing import Orchestrator, PgSchema

PG_DSN = os.environ.get("CYNODE_BDD_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def start_orchestrator(context: Any, extra_env: dict[str, str] | None = None) -> Orchestrator:
    # A counter object, not an int: attributes set during a scenario vanish after it.
    name = f"orchestrator-{next(context.orch_counter)}"
    orch = Orchestrator(
        Path(context.orch_tmp) / name,
        context.admin_password,
        context.node_psk,
        database_url=context.db_url,
        settings={
            "CYNODE_JWT_SECRET": context.jwt_secret,
            # Every scenario logs in from 127.0.0.1; the throttling scenario lowers this.
            "CYNODE_LOGIN_MAX_FAILURES": "1000",
            **(extra_env or {}),
        },
        name=name,
        ready_timeout=60.0,
    )
    context.orch_procs.append(orch)
    orch.start()
    return orch


def before_all(context: Any) -> None:
    context.orch_tmp = tempfile.mkdtemp(prefix="orch-bdd-")
    context.orch_procs = []
    context.orch_counter = itertools.count()
    context.admin_password = secrets.token_urlsafe(18)
    context.node_psk = secrets.token_urlsafe(18)
    context.jwt_secret = secrets.token_urlsafe(32)
    context.pg_schema = PgSchema.create("bdd", PG_DSN)
    context.db_url = context.pg_schema.url
    main = start_orchestrator(context)
    context.orchestrator = main
    context.rest_url = main.gateway_url
    context.grpc_target = main.gateway_grpc
    context.control_rest_url = main.control_url
    context.control_grpc_target = main.control_grpc
    context.orchestrator_env = main.environ()
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
        context.pg_schema.drop()
    if getattr(context, "failed_any", False):
        print(f"orchestrator suite: logs kept in {context.orch_tmp}")
    else:
        shutil.rmtree(context.orch_tmp, ignore_errors=True)
