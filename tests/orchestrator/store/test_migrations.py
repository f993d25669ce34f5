"""Every migration goes down and up again on both backends, on a database of its own:
0002 (fair share, quotas, node admin) adds columns with server defaults, so rows made
before it read as weight 1, fair key 0, no own quotas and an active node."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from cynode.orchestrator.store import current_revision, head_revision, make_engine, upgrade
from cynode.orchestrator.store.migrate import alembic_config
from cynode.testing import PgSchema


async def _downgrade(engine: AsyncEngine, revision: str) -> None:
    cfg = alembic_config()

    def run(conn: Connection) -> None:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)

    async with engine.begin() as conn:
        await conn.run_sync(run)


@pytest.fixture(params=["sqlite", "postgres"])
async def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
        yield engine
        await engine.dispose()
        return
    schema = PgSchema.create("mig")
    engine = make_engine(schema.url)
    yield engine
    await engine.dispose()
    schema.drop()


async def test_down_to_nothing_and_up_again(fresh: AsyncEngine) -> None:
    await upgrade(fresh, "0001")
    async with fresh.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO users (id, handle, password_hash, is_active, is_admin, created_at,"
                " updated_at) VALUES ('01AAAAAAAAAAAAAAAAAAAAAAAA', 'old', 'x', true, false,"
                " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
    await upgrade(fresh)
    assert await current_revision(fresh) == head_revision()
    async with fresh.connect() as conn:
        row = (
            await conn.execute(
                sa.text(
                    "SELECT weight, fair_last, max_queued_tasks, max_running_jobs,"
                    " max_task_timeout_seconds FROM users WHERE handle = 'old'"
                )
            )
        ).one()
    assert tuple(row) == (1.0, 0.0, None, None, None)
    await _downgrade(fresh, "0001")
    async with fresh.connect() as conn:
        columns = {
            c["name"]
            for c in await conn.run_sync(lambda sync: sa.inspect(sync).get_columns("users"))
        }
    assert "weight" not in columns and "handle" in columns
    await _downgrade(fresh, "base")
    assert await current_revision(fresh) is None
    await upgrade(fresh)
    assert await current_revision(fresh) == head_revision()
