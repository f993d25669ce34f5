"""Processes and the threaded control plane the worker_node steps drive."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx

from cynode.controlplane.v1 import dispatch_pb2
from cynode.jobs.v1 import job_pb2
from tests.fixtures.ports import free_port
from tests.node.cp_server import PSK, FakeControlPlane, StreamSession, start_server

ROOT = Path(__file__).resolve().parents[3]
BIN = ROOT / ".venv" / "bin"
T = TypeVar("T")


def wait_until(predicate: Callable[[], bool], within: float, what: str | Callable[[], str]) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")
        time.sleep(0.05)


class PlaneThread:
    """The in-test control plane on its own event loop in a thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.plane: FakeControlPlane = self.call(lambda: FakeControlPlane(heartbeat_seconds=2))
        self.server, self.target = self.run(start_server(self.plane))

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def call(self, fn: Callable[[], T]) -> T:
        future: Future[T] = Future()

        def invoke() -> None:
            try:
                future.set_result(fn())
            except Exception as exc:
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(invoke)
        return future.result(30)

    def session(self) -> StreamSession:
        wait_until(lambda: bool(self.plane.sessions), 60, "the node's dispatch stream")
        return self.plane.sessions[-1]

    def assign(self, spec: job_pb2.JobSpec) -> None:
        session = self.session()
        message = dispatch_pb2.ConnectResponse(assignment=dispatch_pb2.JobAssignment(spec=spec))
        self.call(lambda: session.outbox.put_nowait(message))

    def result(self, job_id: str, within: float = 60) -> job_pb2.JobResult:
        def found() -> list[job_pb2.JobResult]:
            return [
                r
                for s in self.plane.sessions
                for r in s.of_kind("job_result")
                if r.job_id == job_id
            ]

        wait_until(lambda: bool(found()), within, f"the result of {job_id}")
        return found()[0]

    def close(self) -> None:
        self.run(self.server.stop(grace=None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class NodeProcess:
    def __init__(self, grpc_target: str, psk: str = PSK, **extra_env: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="cynode-bdd-node-"))
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CYNODE_")}
        env.update(
            CYNODE_CONTROL_PLANE_GRPC=grpc_target,
            NODE_PSK=psk,
            CYNODE_NODE_SLUG=f"bdd-node-{self.port}",
            CYNODE_NODE_STATE_DIR=str(self.dir / "state"),
            CYNODE_WORKER_API_PORT=str(self.port),
        )
        env.update(extra_env)
        self.log = self.dir / "node.log"
        self._log: IO[bytes] = self.log.open("wb")
        self.proc = subprocess.Popen(
            [str(BIN / "cynode-node"), "run"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def readyz(self) -> httpx.Response | None:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=5)
        except httpx.TransportError:
            return None

    def wait_readyz(
        self, predicate: Callable[[httpx.Response], bool], within: float
    ) -> httpx.Response:
        answers: list[httpx.Response] = []

        def check() -> bool:
            answer = self.readyz()
            if answer is not None:
                answers.append(answer)
            return answer is not None and predicate(answer)

        wait_until(
            check, within, lambda: f"/readyz (last: {answers[-1].text if answers else None!r})"
        )
        return answers[-1]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class OrchestratorProcess:
    """`cynode-orchestrator serve --dev` on SQLite and free ports."""

    def __init__(self, psk: str, admin_password: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="cynode-bdd-orch-"))
        ports = {name: free_port() for name in ("rest", "grpc", "crest", "cgrpc")}
        env = {k: v for k, v in os.environ.items() if not k.startswith("CYNODE_")}
        env.update(
            CYNODE_DATA_DIR=str(self.dir),
            CYNODE_GATEWAY_REST_PORT=str(ports["rest"]),
            CYNODE_GATEWAY_GRPC_PORT=str(ports["grpc"]),
            CYNODE_CONTROL_REST_PORT=str(ports["crest"]),
            CYNODE_CONTROL_GRPC_PORT=str(ports["cgrpc"]),
            CYNODE_REQUIRE_INFERENCE="false",
            NODE_PSK=psk,
            ADMIN_PASSWORD=admin_password,
        )
        self.rest_url = f"http://127.0.0.1:{ports['rest']}"
        self.control_grpc = f"127.0.0.1:{ports['cgrpc']}"
        self.control_rest = f"http://127.0.0.1:{ports['crest']}"
        self.log = self.dir / "orchestrator.log"
        self._log: IO[bytes] = self.log.open("wb")
        self.proc = subprocess.Popen(
            [str(BIN / "cynode-orchestrator"), "serve"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_healthy(self, within: float = 60) -> None:
        def healthy() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"orchestrator exited:\n{self.tail()}")
            try:
                return httpx.get(f"{self.rest_url}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, within, "the orchestrator's /healthz")
        host, port = self.control_grpc.rsplit(":", 1)

        def control_plane_listens() -> bool:
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
            except OSError:
                return False
            return True

        wait_until(
            control_plane_listens,
            within,
            f"the control plane on {self.control_grpc} (does `serve` run it yet?)",
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
