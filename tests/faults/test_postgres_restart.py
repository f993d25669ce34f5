"""Restart Postgres under load: the orchestrator recovers by itself (same process, no
restart), every accepted task completes with its own output, and /readyz is ready
again. Runs against a PRIVATE Postgres (initdb into a temp dir on a free port) so the
machine's shared server is never touched."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cynode.testing import Stack, free_port
from tools.stack_client import GatewayClient

from .conftest import admin_client, fault_settings

pytestmark = [
    pytest.mark.fault,
    pytest.mark.slow,
    pytest.mark.podman,
    pytest.mark.postgres,
    pytest.mark.timeout(300),
]
PG_BIN = Path("/usr/lib/postgresql/15/bin")


class PrivatePostgres:
    def __init__(self, root: Path) -> None:
        self.data = root / "pgdata"
        self.port = free_port()
        self.log = root / "postgres.log"
        self.root = root

    def _run(self, *argv: str) -> None:
        # initdb and postgres refuse to run as root: run them as `postgres`.
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{argv[0]} failed: {done.stdout}{done.stderr}"

    def init(self) -> None:
        if os.geteuid() == 0:
            postgres = pwd.getpwnam("postgres")
            os.chown(self.root, postgres.pw_uid, postgres.pw_gid)
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres")

    def pg_ctl(self, action: str) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
            "-o", opts, "-w", "-m", "fast", action,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    if not (PG_BIN / "initdb").exists():
        pytest.fail(f"{PG_BIN}/initdb is missing (apt install postgresql-15)")
    # Not under pytest's tmp dir: that is 0700 root, and Postgres runs as `postgres`.
    root = Path(tempfile.mkdtemp(prefix="cynode-pg-"))
    pg = PrivatePostgres(root)
    pg.init()
    pg.pg_ctl("start")
    try:
        yield pg
    finally:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(pg.data),
             "-m", "immediate", "stop"],
            check=False, capture_output=True,
        )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


class Load(threading.Thread):
    """Creates a task every 100 ms; remembers what the gateway accepted."""

    def __init__(self, client: GatewayClient) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.accepted: dict[str, str] = {}
        self.refused = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stop_event.is_set():
            marker = f"load-{n}"
            n += 1
            try:
                self.accepted[self.client.commands(f"echo {marker}")] = marker
            except (AssertionError, httpx.HTTPError):
                self.refused += 1
            self.stop_event.wait(0.1)


def test_postgres_restart_under_load(
    make_stack: list[Stack],
    private_pg: PrivatePostgres,
    stack_dir: Path,
    fault_counts: list[str],
) -> None:
    stack = Stack(fault_settings(stack_dir, database_url=private_pg.url))
    make_stack.append(stack)
    stack.start()
    orchestrator_pid = stack.procs["orchestrator"].pid
    client = admin_client(stack)
    load = Load(client)
    load.start()
    time.sleep(3)
    before = len(load.accepted)
    private_pg.pg_ctl("restart")
    time.sleep(5)
    load.stop_event.set()
    load.join()
    after = len(load.accepted) - before
    completed = 0
    for task_id, marker in load.accepted.items():
        body = client.wait_done(task_id, timeout=120)
        assert body["status"] == "completed", body
        assert body["stdout"].strip() == marker, body
        completed += 1
    ready = httpx.get(f"{stack.gateway_url}/readyz", timeout=5)
    client.close()
    fault_counts.append(
        f"postgres restart under load: {completed}/{len(load.accepted)} accepted tasks "
        f"completed ({after} accepted after the restart began, {load.refused} refused "
        f"during it), orchestrator pid unchanged: "
        f"{stack.procs['orchestrator'].pid == orchestrator_pid}"
    )
    assert stack.procs["orchestrator"].alive()
    assert stack.procs["orchestrator"].pid == orchestrator_pid
    assert before > 0 and after > 0, (before, after)
    assert ready.status_code == 200, ready.text
