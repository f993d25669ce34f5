"""HeldConnection: one connection reused across transactions, dropped on error or
after idling, serialised between concurrent callers."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cynode.orchestrator.controlplane.held import HeldConnection
from cynode.orchestrator.store.models import new_id, utcnow
from cynode.orchestrator.store.tables import NODES


async def _count_in(conn: AsyncConnection) -> int:
    return int((await conn.execute(sa.select(sa.func.count()).select_from(NODES))).scalar_one())


async def _count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return await _count_in(conn)


async def test_reuses_one_connection_and_commits(engine: AsyncEngine) -> None:
    held = HeldConnection(engine)
    async with held.begin() as first:
        await first.execute(sa.text("SELECT 1"))
    async with held.begin() as second:
        assert second is first
    await held.close()
    await held.close()  # closing twice is harmless


async def test_error_rolls_back_and_replaces_the_connection(engine: AsyncEngine) -> None:
    held = HeldConnection(engine)
    async with held.begin() as first:
        pass
    before = await _count(engine)
    with pytest.raises(RuntimeError):
        async with held.begin() as conn:
            await conn.execute(
                NODES.insert().values(
                    id=new_id(),
                    slug="held-n1",
                    status="offline",
                    capability={},
                    inference_supported=False,
                    max_concurrency=1,
                    registered_at=utcnow(),
                    updated_at=utcnow(),
                )
            )
            assert await _count_in(conn) == before + 1
            raise RuntimeError("boom")
    assert await _count(engine) == before  # rolled back
    async with held.begin() as again:
        assert again is not first
        assert (await again.execute(sa.text("SELECT 1"))).scalar_one() == 1
    await held.close()


async def test_idle_connection_is_returned_and_a_fresh_one_taken(engine: AsyncEngine) -> None:
    held = HeldConnection(engine, idle_seconds=0.05)
    async with held.begin() as first:
        pass
    async with held.begin() as soon:
        assert soon is first
    await asyncio.sleep(0.1)
    async with held.begin() as later:
        assert later is not first
    await held.close()


async def test_concurrent_callers_take_turns(engine: AsyncEngine) -> None:
    held = HeldConnection(engine)
    inside = 0
    most = 0

    async def one() -> None:
        nonlocal inside, most
        async with held.begin() as conn:
            inside += 1
            most = max(most, inside)
            await conn.execute(sa.text("SELECT 1"))
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.gather(*(one() for _ in range(5)))
    assert most == 1
    await held.close()
