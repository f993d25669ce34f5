"""Fixtures: a fresh database per test (the scheduler claims every queued job it can
see, so tests must not share one), and a control plane on a real gRPC port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from ulid import ULID

from cynode.orchestrator.simnode.harness import ControlPlaneServer, settings_for_tests
from cynode.orchestrator.store import make_engine, upgrade
from tests.fixtures.db import PG_ADMIN_DSN


async def _fresh(kind: str, tmp_path: Path) -> tuple[AsyncEngine, str | None]:
    if kind == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'cp.db'}")
        schema = None
    else:
        schema = f"cp_{str(ULID()).lower()}"
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await conn.execute(f'CREATE SCHEMA "{schema}"')
        finally:
            await conn.close()
        engine = make_engine(f"{PG_ADMIN_DSN}?search_path={schema}")
    await upgrade(engine)
    return engine, schema


async def _drop(engine: AsyncEngine, schema: str | None) -> None:
    await engine.dispose()
    if schema is not None:
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        finally:
            await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    eng, schema = await _fresh(request.param, tmp_path)
    yield eng
    await _drop(eng, schema)


@pytest.fixture
async def sqlite_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    eng, schema = await _fresh("sqlite", tmp_path)
    yield eng
    await _drop(eng, schema)


@pytest.fixture
async def pg_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    eng, schema = await _fresh("postgres", tmp_path)
    yield eng
    await _drop(eng, schema)


@pytest.fixture
async def server(engine: AsyncEngine) -> AsyncIterator[ControlPlaneServer]:
    srv = await ControlPlaneServer(engine, settings_for_tests()).start()
    yield srv
    await srv.stop()


@pytest.fixture
async def sqlite_server(sqlite_engine: AsyncEngine) -> AsyncIterator[ControlPlaneServer]:
    srv = await ControlPlaneServer(sqlite_engine, settings_for_tests()).start()
    yield srv
    await srv.stop()
