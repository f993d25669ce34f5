"""behave hooks for features/e2e: a REAL stack on Postgres, started as `make up` would
start it (cynode.testing.Stack) but on free ports and in a temp dir: orchestrator on a fresh
schema of database `test`, one node on real Podman, and the development model backend
(SmolLM2-135M behind the Ollama API) unless CYNODE_E2E_INFERENCE_URL names an Ollama.

After the run every log of the stack is scanned for the admin password, the PSK, the
JWT secret and every token the suite saw; a hit fails the run.

CYNODE_E2E_PG_DSN overrides the Postgres server (default
postgresql://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from cynode.testing import PgSchema, Stack, StackSettings, iter_secrets

PG_DSN = os.environ.get("CYNODE_E2E_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def scan_logs(stack: Stack, extra: set[str]) -> list[str]:
    """Names of log files holding any of the stack's secrets or the given tokens."""
    needles = {s for s in (*iter_secrets(stack), *extra) if len(s) >= 8}
    hits = []
    for log in stack.log_files():
        text = log.read_text(errors="replace")
        hits += [f"{log.name}: secret #{i}" for i, s in enumerate(sorted(needles)) if s in text]
    return hits


def before_all(context: Any) -> None:
    if context.config.dry_run:
        return
    context.e2e_tmp = tempfile.mkdtemp(prefix="cynode-e2e-")
    context.pg_schema = PgSchema.create("e2e", PG_DSN)
    settings = StackSettings.free(
        Path(context.e2e_tmp),
        database_url=context.pg_schema.url,
        inference_url=os.environ.get("CYNODE_E2E_INFERENCE_URL", ""),
        node_slug="e2e-node",
    )
    # Fresh secrets for this run, never the developer's var/dev-credentials.
    os.environ.setdefault("ADMIN_PASSWORD", secrets.token_urlsafe(18))
    os.environ.setdefault("NODE_PSK", secrets.token_urlsafe(18))
    context.stack = Stack(
        settings, say=lambda msg: print(f"e2e: {msg}", file=sys.stderr, flush=True)
    )
    context.seen_tokens = set()
    try:
        context.stack.start()
    except Exception:
        context.stack.stop()
        raise


def before_scenario(context: Any, scenario: Any) -> None:
    context.home = Path(tempfile.mkdtemp(prefix="home-", dir=context.e2e_tmp))
    context.task_id = None
    context.result = None


def after_scenario(context: Any, scenario: Any) -> None:
    if scenario.status == "failed":
        context.failed_any = True


def after_all(context: Any) -> None:
    stack: Stack | None = getattr(context, "stack", None)
    if stack is None:
        return
    stack.stop()
    hits = scan_logs(stack, context.seen_tokens)
    logs = stack.log_files()
    print(f"e2e: secret scan of {len(logs)} logs: {len(hits)} leak(s)", file=sys.stderr)
    context.pg_schema.drop()
    if hits or getattr(context, "failed_any", False):
        print(f"e2e: logs kept in {stack.logs}", file=sys.stderr)
        for hit in hits:
            print(f"e2e: LEAK {hit}", file=sys.stderr)
        if hits:
            raise AssertionError("e2e: a secret was found in the logs")
    else:
        shutil.rmtree(context.e2e_tmp, ignore_errors=True)
