"""The real processes on the test hosts: `cynode-orchestrator serve` on orch (TLS on
198.18.0.1, mTLS for nodes), `cynode-node run` on node-a and node-b (their own Podman
services, worker API over HTTPS), and a REST client on the client host.

The orchestrator keeps its state in a SQLite file the test reads directly (the root
namespace has no route to the hosts) to count jobs, results and duplicates.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from cynode.orchestrator.certs import init_certs, issue_node
from cynode.testing import Node, Orchestrator, Proc, wait_until
from cynode.testing.launchers import CONTAINERS_CONF
from tests.netns.topology import Topology

LEASE_SECONDS = 6
HEARTBEAT_SECONDS = 1
GATEWAY = 12080
CONTROL_REST = 12082
CONTROL_GRPC = 12083
WORKER_API = 12090


@dataclass
class Counts:
    created: int
    stored: int
    duplicates: int
    lost: int

    def line(self, scenario: str) -> str:
        return (
            f"[netns] {scenario}: jobs created={self.created} results stored={self.stored} "
            f"duplicates={self.duplicates} lost={self.lost}"
        )


@dataclass
class Cluster:
    topo: Topology
    tmp: Path
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    psk: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    procs: dict[str, Proc] = field(default_factory=dict)
    token: str = ""

    def __post_init__(self) -> None:
        self.certs = self.tmp / "certs"
        orch = self.topo.hosts["orch"].address
        init_certs(self.certs, [orch, "localhost"])
        for slug in ("node-a", "node-b"):
            issue_node(self.certs, slug, [self.topo.hosts[slug].address])
        self.ca = self.certs / "ca.pem"
        self.db = self.tmp / "orchestrator" / "cynode.db"
        self.gateway = f"https://{orch}:{GATEWAY}"

    # -- processes --------------------------------------------------------------------

    def _prefix(self, host: str) -> list[str]:
        return self.topo.hosts[host].argv()

    def start_orchestrator(self) -> Proc:
        orch = Orchestrator(
            self.tmp / "orchestrator",
            self.admin_password,
            self.psk,
            database_url=f"sqlite:///{self.db}",
            ports={
                "gateway_rest": GATEWAY,
                "gateway_grpc": GATEWAY + 1,
                "control_rest": CONTROL_REST,
                "control_grpc": CONTROL_GRPC,
            },
            host=self.topo.hosts["orch"].address,
            scheme="https",
            settings={
                "CYNODE_LISTEN_HOST": self.topo.hosts["orch"].address,
                "CYNODE_TLS_CERT": str(self.certs / "server.pem"),
                "CYNODE_TLS_KEY": str(self.certs / "server.key"),
                "CYNODE_NODE_CLIENT_CA": str(self.ca),
                "CYNODE_REQUIRE_INFERENCE": "false",
                "CYNODE_LEASE_SECONDS": str(LEASE_SECONDS),
                "CYNODE_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
            },
            prefix=self._prefix("orch"),
        )
        proc = self.procs["orchestrator"] = orch.start(wait=False)
        # Readiness as the client host sees it: the root namespace has no route there.
        orch.wait_ready(60, check=lambda: self._get("/healthz") == 200)
        return proc

    def node_config(self, slug: str, **changes: Any) -> dict[str, Any]:
        orch = self.topo.hosts["orch"].address
        me = self.topo.hosts[slug].address
        body: dict[str, Any] = {
            "node": {"slug": slug},
            "psk": self.psk,
            "orchestrator": {
                "url": f"https://{orch}:{CONTROL_REST}",
                "grpc": f"{orch}:{CONTROL_GRPC}",
                "ca_file": str(self.ca),
                "client_cert": str(self.certs / f"node-{slug}.pem"),
                "client_key": str(self.certs / f"node-{slug}.key"),
            },
            "state_dir": str(self.tmp / slug),
            "worker_api": {
                "host": me,
                "port": WORKER_API,
                "tls_cert": str(self.certs / f"node-{slug}.pem"),
                "tls_key": str(self.certs / f"node-{slug}.key"),
            },
            "podman": {"containers_conf": str(CONTAINERS_CONF)},
            "sandbox": {"max_concurrency": 2},
            "inference": {"mode": "none"},
            "reconnect": {"initial_seconds": 0.2, "max_seconds": 1.0},
        }
        for dotted, value in changes.items():
            section, _, key = dotted.partition("__")
            if key:
                body.setdefault(section, {})[key] = value
            else:
                body[section] = value
        return body

    def start_node(self, slug: str, *, name: str = "", wait: bool = True, **changes: Any) -> Proc:
        # Everything in the YAML; the env adds only what the launcher always sets, with
        # the same values (state dir, worker port, containers.conf).
        node = Node(
            self.tmp / slug,
            worker_port=WORKER_API,
            host=self.topo.hosts[slug].address,
            scheme="https",
            config=self.node_config(slug, **changes),
            name=name or slug,
            prefix=self._prefix(slug),
        )
        proc = self.procs[node.name] = node.start(wait=False)
        if wait:
            node.wait_ready(120, check=lambda: self._get(f"{node.worker_url}/readyz") == 200)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.stop()

    def wait(self, check: Callable[[], bool], timeout: float, proc: Proc | None = None) -> None:
        """Until `check` holds (TimeoutError otherwise), failing early if `proc` exits."""
        wait_until(check, timeout, "the cluster's condition", procs=[proc] if proc else [])

    # -- the client host --------------------------------------------------------------

    def _client(self) -> httpx.Client:
        verify = ssl.create_default_context(cafile=str(self.ca))
        return httpx.Client(verify=verify, timeout=10.0)

    def _get(self, url: str) -> int:
        full = url if url.startswith("https://") else f"{self.gateway}{url}"

        def call() -> int:
            try:
                with self._client() as http:
                    return http.get(full).status_code
            except httpx.HTTPError:
                return 0

        return self.topo.in_client(call)

    def login(self) -> None:
        def call() -> str:
            with self._client() as http:
                reply = http.post(
                    f"{self.gateway}/v1/auth/login",
                    json={"handle": "admin", "password": self.admin_password},
                )
                reply.raise_for_status()
                return str(reply.json()["access_token"])

        self.token = self.topo.in_client(call)

    def create(self, commands: list[str], name: str = "") -> str:
        def call() -> str:
            with self._client() as http:
                body: dict[str, Any] = {"input_mode": "commands", "commands": commands}
                if name:
                    body["task_name"] = name
                reply = http.post(
                    f"{self.gateway}/v1/tasks",
                    json=body,
                    headers={"authorization": f"Bearer {self.token}"},
                )
                reply.raise_for_status()
                return str(reply.json()["task_id"])

        return self.topo.in_client(call)

    # -- the store --------------------------------------------------------------------

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def job(self, task_id: str) -> dict[str, Any]:
        rows = self.query(
            "SELECT j.id, j.status, j.attempt, n.slug, j.stdout, j.created_at, j.started_at "
            "FROM jobs j LEFT JOIN nodes n ON n.id = j.node_id WHERE j.task_id = ?",
            task_id,
        )
        keys = ("id", "status", "attempt", "node", "stdout", "created_at", "started_at")
        return dict(zip(keys, rows[0], strict=True))

    def attempts(self, job_id: str) -> list[tuple[int, str]]:
        return [
            (int(a), str(s))
            for a, s in self.query(
                "SELECT attempt, status FROM job_attempts WHERE job_id = ? ORDER BY attempt", job_id
            )
        ]

    def attempt_rows(self, job_id: str) -> list[tuple[Any, ...]]:
        """Every copy of a job: attempt, status, reason, node, started, ended, received."""
        return self.query(
            "SELECT a.attempt, a.status, a.reason, n.slug, a.started_at, a.ended_at, "
            "a.received_at FROM job_attempts a LEFT JOIN nodes n ON n.id = a.node_id "
            "WHERE a.job_id = ? ORDER BY a.attempt",
            job_id,
        )

    def wait_done(self, task_ids: list[str], timeout: float) -> None:
        def done() -> bool:
            return all(
                self.job(t)["status"] in ("completed", "failed", "canceled") for t in task_ids
            )

        self.wait(done, timeout)

    def counts(self, task_ids: list[str], expect_stdout: Callable[[str], str]) -> Counts:
        stored = duplicates = lost = 0
        for task_id in task_ids:
            job = self.job(task_id)
            completed = [a for a, s in self.attempts(job["id"]) if s == "completed"]
            duplicates += max(0, len(completed) - 1)
            stdout = bytes(job["stdout"]).decode(errors="replace")
            if job["status"] == "completed" and stdout.strip() == expect_stdout(task_id):
                stored += 1
            else:
                lost += 1
        return Counts(len(task_ids), stored, duplicates, lost)

    def dispatch_latencies(self, task_ids: list[str]) -> list[float]:
        out = []
        for task_id in task_ids:
            job = self.job(task_id)
            if job["started_at"]:
                start = datetime.fromisoformat(str(job["started_at"]))
                created = datetime.fromisoformat(str(job["created_at"]))
                out.append((start - created).total_seconds())
        return sorted(out)

    def session_jwt(self, slug: str) -> str:
        body = json.loads((self.tmp / slug / "session.json").read_text())
        return str(body["node_jwt"])

    def wire_secrets(self) -> dict[str, str]:
        """What must never cross a link in clear: the PSK, the admin password, both
        nodes' session JWTs and the client's access token."""
        return {
            "psk": self.psk,
            "password": self.admin_password,
            "node jwt a": self.session_jwt("node-a"),
            "node jwt b": self.session_jwt("node-b"),
            "access token": self.token,
        }
