"""cynode.testing.postgres: a schema per run on the shared server."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from cynode.testing.postgres import PG_DSN, PgSchema, pg_execute

pytestmark = pytest.mark.postgres


async def _exists(name: str) -> bool:
    conn = await asyncpg.connect(PG_DSN)
    try:
        found = await conn.fetchval(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1", name
        )
    finally:
        await conn.close()
    return bool(found)


async def test_a_schema_is_made_named_and_dropped() -> None:
    # pg_execute runs beside this event loop: it must not need (or close) it.
    schema = PgSchema.create("harness")
    assert schema.name.startswith("harness_")
    assert schema.url == f"{PG_DSN}?search_path={schema.name}"
    assert await _exists(schema.name)
    pg_execute(f'CREATE TABLE "{schema.name}".t (x int)')
    schema.drop()
    assert not await _exists(schema.name)
    schema.drop()  # twice: nothing left to drop, no error
    assert asyncio.get_running_loop().is_running()
