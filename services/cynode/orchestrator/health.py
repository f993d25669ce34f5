"""`/healthz` (the process answers) and `/readyz` (it can do useful work: database
reachable, schema current, and an inference path present unless relaxed)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from cynode.orchestrator.openapi import openapi_document
from cynode.orchestrator.store import Node, is_current

log = logging.getLogger(__name__)

InferenceReady = Callable[[], Awaitable[bool]]
CHECK_TIMEOUT_SECONDS = 3.0


def store_inference_ready(factory: async_sessionmaker[AsyncSession]) -> InferenceReady:
    """Default inference check: a node that is online and can run inference."""

    async def ready() -> bool:
        async with factory() as session:
            row = await session.exec(
                select(Node.id)
                .where(Node.status == "online", Node.inference_supported == True)  # noqa: E712
                .limit(1)
            )
            return row.first() is not None

    return ready


@dataclass(frozen=True)
class ReadinessReport:
    ready: bool
    missing: list[str]
    notes: list[str]

    def body(self) -> str:
        if self.ready:
            return "\n".join(["ready", *self.notes]) + "\n"
        return (
            "\n".join(["not ready", *(f"missing: {m}" for m in self.missing), *self.notes]) + "\n"
        )


class Readiness:
    def __init__(
        self,
        engine: AsyncEngine,
        inference_ready: InferenceReady,
        *,
        require_inference: bool = True,
    ) -> None:
        self._engine = engine
        self.inference_ready = inference_ready
        self._require_inference = require_inference

    async def _db_ok(self) -> bool:
        async with self._engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True

    async def _check(self, name: str, check: Callable[[], Awaitable[bool]]) -> bool:
        try:
            return await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS)
        except Exception as exc:
            # A readiness probe answers 503; the reason goes to the log, not the body.
            log.warning("readiness check %s failed: %s", name, type(exc).__name__)
            return False

    async def report(self) -> ReadinessReport:
        missing: list[str] = []
        notes: list[str] = []
        if not await self._check("database", self._db_ok):
            missing.append("database (not reachable)")
            return ReadinessReport(False, missing, notes)
        if not await self._check("migrations", lambda: is_current(self._engine)):
            missing.append("migrations (schema not current: run `cynode-orchestrator migrate`)")
        if self._require_inference:
            if not await self._check("inference", self.inference_ready):
                missing.append("inference path (no connected node with inference)")
        else:
            notes.append(
                "inference path not required (CYNODE_REQUIRE_INFERENCE=false, sandbox-only)"
            )
        return ReadinessReport(not missing, missing, notes)


def health_routes(readiness: Readiness, surface: str = "gateway") -> list[Route]:
    """/healthz, /readyz and /openapi.json (the generated document of this surface)."""
    document = openapi_document(surface)

    async def openapi(_request: Request) -> JSONResponse:
        return JSONResponse(document)

    async def healthz(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def readyz(_request: Request) -> PlainTextResponse:
        report = await readiness.report()
        return PlainTextResponse(report.body(), status_code=200 if report.ready else 503)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
