"""Prometheus metrics of the user gateway's REST port: requests by route and status,
latency, and tasks by status (counted from the store when scraped)."""

from __future__ import annotations

import re
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from sqlalchemy import func
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cynode.orchestrator.lifecycle import STATUSES
from cynode.orchestrator.store import Task

# Route templates keep the label set small: ids become `{task_id}`.
_ROUTES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), template)
    for pattern, template in (
        (r"^/v1/tasks/[^/]+/(result|cancel|logs|watch)$", "/v1/tasks/{task_id}/\\1"),
        (r"^/v1/tasks/[^/]+$", "/v1/tasks/{task_id}"),
        (
            r"^(/healthz|/readyz|/metrics|/openapi\.json|/v1/tasks|/v1/auth/login|"
            r"/v1/auth/refresh|/v1/auth/logout|/v1/users/me|/v1/nodes|/v1/models|"
            r"/v1/chat/completions|/v1/embeddings|/v1/inference/usage)$",
            "\\1",
        ),
    )
)


def route_template(path: str) -> str:
    for pattern, template in _ROUTES:
        match = pattern.match(path)
        if match:
            return match.expand(template)
    return "other"


class GatewayMetrics:
    def __init__(self, factory: async_sessionmaker[AsyncSession]) -> None:
        self._factory = factory
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cynode_gateway_requests",
            "REST requests by method, route template and HTTP status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "cynode_gateway_request_duration_seconds",
            "REST request latency until the response ends",
            ["method", "route"],
            registry=self.registry,
        )
        self.tasks = Gauge(
            "cynode_tasks", "tasks in the store by status", ["status"], registry=self.registry
        )

    def wrap(self, app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            route = route_template(scope.get("path", ""))
            method = scope.get("method", "GET")
            status = 500
            start = time.perf_counter()

            async def send_wrapper(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await app(scope, receive, send_wrapper)
            finally:
                self.requests.labels(method, route, str(status)).inc()
                self.latency.labels(method, route).observe(time.perf_counter() - start)

        return middleware

    async def refresh_task_counts(self) -> None:
        async with self._factory() as session:
            rows = await session.exec(
                select(Task.status, func.count(col(Task.id))).group_by(col(Task.status))
            )
            counts = dict(rows.all())
        for status in STATUSES | set(counts):
            self.tasks.labels(status).set(counts.get(status, 0))

    def route(self) -> Route:
        async def metrics(_request: Request) -> Response:
            await self.refresh_task_counts()
            return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

        return Route("/metrics", metrics, methods=["GET"])
