"""The threaded control plane the worker_node steps drive, and the node processes
they start against it (cynode.testing.Node)."""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import httpx

from cynode.controlplane.v1 import dispatch_pb2
from cynode.jobs.v1 import job_pb2
from cynode.testing import Node, free_port, wait_until
from tests.node.cp_server import PSK, FakeControlPlane, StreamSession, start_server

T = TypeVar("T")


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


def start_node(grpc_target: str, psk: str = PSK, **settings: str) -> Node:
    """A `cynode-node run` against `grpc_target` in a temp dir, not waited for (the
    scenarios watch its readiness change)."""
    port = free_port()
    node = Node(
        Path(tempfile.mkdtemp(prefix="cynode-bdd-node-")) / "state",
        psk,
        control_grpc=grpc_target,
        slug=f"bdd-node-{port}",
        worker_port=port,
        settings=settings,
    )
    node.start(wait=False)
    return node


def wait_readyz(
    node: Node, predicate: Callable[[httpx.Response], bool], within: float
) -> httpx.Response:
    """Until an answer of the node's /readyz satisfies `predicate`; that answer."""
    answers: list[httpx.Response] = []

    def check() -> bool:
        try:
            answer = httpx.get(f"{node.worker_url}/readyz", timeout=5)
        except httpx.TransportError:
            return False
        answers.append(answer)
        return predicate(answer)

    wait_until(
        check,
        within,
        lambda: f"/readyz (last: {answers[-1].text if answers else None!r})",
        procs=[node.running()],
    )
    return answers[-1]
