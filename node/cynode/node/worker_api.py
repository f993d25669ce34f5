"""The worker API on :12090: /healthz, /readyz, /metrics, served in-process by uvicorn.

Any request whose body is over the cap (10 MiB by default) is refused with 413 before
routing, whether it declares its length or streams it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .config import NodeConfig, is_loopback
from .metrics import NodeMetrics
from .readiness import Readiness

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 10 * 1024 * 1024
_PROBLEM = "application/problem+json"


def _problem_413(limit: int) -> Response:
    body = {
        # The same type and title as the orchestrator's (SPEC §2.1), so a client
        # tells a 413 apart by one table whichever process answered.
        "type": "urn:cynode:problem:payload-too-large",
        "title": "Payload too large",
        "status": 413,
        "detail": f"request body is over {limit} bytes",
    }
    return Response(json.dumps(body), status_code=413, media_type=_PROBLEM)


class BodyLimit:
    """ASGI middleware: 413 for a declared or streamed body over `limit()` bytes."""

    def __init__(self, app: ASGIApp, limit: Callable[[], int]) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit()
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await _problem_413(limit)(scope, receive, send)
                return
        # The worker API's bodies are small: read the whole body here (up to the cap),
        # so the 413 is sent before the app has started any response.
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message.get("body", b"")
            more = bool(message.get("more_body", False))
            if len(body) > limit:
                await _problem_413(limit)(scope, receive, send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def build_app(
    readiness: Readiness, metrics: NodeMetrics, max_body: Callable[[], int] = lambda: MAX_BODY_BYTES
) -> ASGIApp:
    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(_: Request) -> Response:
        text = readiness.describe()
        return PlainTextResponse(text, status_code=200 if readiness.ready else 503)

    async def metrics_view(_: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def drain_body(request: Request) -> Response:
        # Reading the body makes a streamed oversize body hit the limit (413) first.
        await request.body()
        return PlainTextResponse("not found", status_code=404)

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_view),
            Route("/{path:path}", drain_body, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        ]
    )
    return BodyLimit(app, max_body)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The daemon owns SIGTERM/SIGINT; uvicorn must not take them over.
        yield


class PlainTextRefused(OSError):
    """The worker API would serve plain text on an address other hosts can reach."""


@dataclass(frozen=True)
class WorkerApiTls:
    cert: str
    key: str


def worker_api_tls(config: NodeConfig) -> WorkerApiTls | None:
    """TLS for the worker API from the node config; refuses plain text on a non-loopback
    address unless `insecure` is set (then it warns, loudly, on every start)."""
    if config.worker_api_tls_cert:
        return WorkerApiTls(config.worker_api_tls_cert, config.worker_api_tls_key)
    if not is_loopback(config.worker_api_host):
        if not config.insecure:
            raise PlainTextRefused(
                f"worker API on {config.worker_api_host} needs worker_api.tls_cert and "
                "worker_api.tls_key (or insecure: true for plain text)"
            )
        log.warning(
            "INSECURE: worker API serves PLAIN TEXT on %s:%d (insecure: true)",
            config.worker_api_host,
            config.worker_api_port,
        )
    return None


class WorkerApiServer:
    """uvicorn in this process and event loop; `start()` returns once it listens."""

    def __init__(self, app: ASGIApp, host: str, port: int, tls: WorkerApiTls | None = None) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            ssl_certfile=tls.cert if tls is not None else None,
            ssl_keyfile=tls.key if tls is not None else None,
        )
        self.server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        for server in self.server.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        raise RuntimeError("worker API is not listening")

    async def start(self) -> None:
        self._task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self._task.done():
                await self._task
                raise OSError("worker API failed to start")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
