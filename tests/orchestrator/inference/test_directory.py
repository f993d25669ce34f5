"""The inference link directory on a real Postgres (one schema per test): what one
replica's links announce, another reads; a link that ends is withdrawn; a dead
replica's rows are ignored and then deleted; a failed holder is skipped a while."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from cynode.orchestrator.inference.directory import LINKS, LinkDirectory
from cynode.orchestrator.inference.links import LinkRegistry, NodeLink
from cynode.orchestrator.store import make_engine, upgrade, utcnow
from cynode.testing.postgres import PgSchema


@pytest.fixture
async def pg() -> AsyncIterator[AsyncEngine]:
    schema = PgSchema.create("cyn_dir")
    engine = make_engine(schema.url)
    await upgrade(engine)
    yield engine
    await engine.dispose()
    schema.drop()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def replica(
    engine: AsyncEngine,
    name: str,
    *,
    expire_s: float = 10.0,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[LinkRegistry, LinkDirectory]:
    links = LinkRegistry()
    directory = LinkDirectory(engine, links, name, refresh_s=0.2, expire_s=expire_s, clock=clock)
    links.on_change = directory.changed
    directory.address = f"{name}.example:12081"
    return links, directory


async def test_links_are_announced_read_and_withdrawn(pg: AsyncEngine) -> None:
    links_a, a = replica(pg, "A" * 26)
    _links_b, b = replica(pg, "B" * 26)
    a.start()
    b.start()
    try:
        link = NodeLink("N" * 26, "gpu-1", frozenset({"m1", "m2"}), capacity=4)
        links_a.add(link)
        links_a.add(NodeLink("M" * 26, "gpu-2", frozenset({"m1"})))
        await a.refresh()
        await b.refresh()
        assert b.models() == {"m1": 2, "m2": 1}
        assert a.models() == {}  # its own links are the router's, not the directory's
        holders = b.holders("m1")
        assert [h.node_id for h in holders] == ["N" * 26, "M" * 26]  # larger capacity first
        assert holders[0].address == "AAAAAAAAAAAAAAAAAAAAAAAAAA.example:12081"
        assert holders[0].capacity == 4 and holders[0].replica_id == "A" * 26

        # What a node serves changes (a new hello): the row follows.
        link.models = frozenset({"m3"})
        links_a.changed()
        await a.refresh()
        await b.refresh()
        assert b.models() == {"m1": 1, "m3": 1}

        # The link ends: withdrawn at once, not when it would expire.
        link.close()
        links_a.remove(link)
        await a.refresh()
        await b.refresh()
        assert b.models() == {"m1": 1}
    finally:
        await a.stop()
        await b.stop()
    # A replica that stops withdraws everything it announced.
    async with pg.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(LINKS))).scalar() == 0


async def test_a_node_that_moved_is_announced_by_its_new_holder(pg: AsyncEngine) -> None:
    links_a, a = replica(pg, "A" * 26)
    links_b, b = replica(pg, "B" * 26)
    a.start()
    b.start()
    try:
        old = NodeLink("N" * 26, "gpu-1", frozenset({"m1"}))
        links_a.add(old)
        await a.refresh()
        # The node reconnects to B before A noticed its old stream ended...
        links_b.add(NodeLink("N" * 26, "gpu-1", frozenset({"m1"})))
        await b.refresh()
        # ...and A's withdrawal of the old link leaves B's row alone.
        old.close()
        links_a.remove(old)
        await a.refresh()
        assert a.holders("m1")[0].replica_id == "B" * 26
        assert b.models() == {}  # B serves it itself
        async with pg.connect() as conn:
            rows = (await conn.execute(sa.select(LINKS.c.replica_id))).scalars().all()
        assert rows == ["B" * 26]
    finally:
        await a.stop()
        await b.stop()


async def test_a_dead_replicas_rows_expire(pg: AsyncEngine) -> None:
    _links, b = replica(pg, "B" * 26, expire_s=5.0)
    async with pg.begin() as conn:
        await conn.execute(
            sa.insert(LINKS),
            [
                {
                    "node_id": "D" * 26,
                    "replica_id": "D" * 26,
                    "address": "dead:1",
                    "models": ["m1"],
                    "capacity": 1,
                    "seen_at": utcnow() - timedelta(seconds=6),
                },
                {
                    "node_id": "L" * 26,
                    "replica_id": "L" * 26,
                    "address": "live:1",
                    "models": ["m2"],
                    "capacity": 1,
                    "seen_at": utcnow(),
                },
            ],
        )
    b.start()
    try:
        await b.refresh()
        assert b.models() == {"m2": 1}
        async with pg.connect() as conn:
            left = (await conn.execute(sa.select(LINKS.c.node_id))).scalars().all()
        assert left == ["L" * 26]
    finally:
        await b.stop()


async def test_a_failed_holder_is_skipped_for_a_while(pg: AsyncEngine) -> None:
    clock = Clock()
    links_a, a = replica(pg, "A" * 26)
    _links_b, b = replica(pg, "B" * 26, expire_s=5.0, clock=clock)
    a.start()
    b.start()
    try:
        links_a.add(NodeLink("N" * 26, "gpu-1", frozenset({"m1"})))
        await a.refresh()
        await b.refresh()
        address = b.holders("m1")[0].address
        b.suspect(address)
        assert b.holders("m1") == []
        assert b.models() == {"m1": 1}  # still listed: it may answer the next caller
        clock.now += 5.1
        assert [h.address for h in b.holders("m1")] == [address]
    finally:
        await a.stop()
        await b.stop()


async def test_nothing_is_announced_before_the_address_is_known(pg: AsyncEngine) -> None:
    links_a, a = replica(pg, "A" * 26)
    a.address = ""
    a.start()
    try:
        links_a.add(NodeLink("N" * 26, "gpu-1", frozenset({"m1"})))
        await a.refresh()
        async with pg.connect() as conn:
            assert (await conn.execute(sa.select(sa.func.count()).select_from(LINKS))).scalar() == 0
        a.address = "a:1"
        a.changed()
        await a.refresh()
        async with pg.connect() as conn:
            assert (await conn.execute(sa.select(sa.func.count()).select_from(LINKS))).scalar() == 1
    finally:
        await a.stop()
    await a.stop()  # twice is harmless
    await asyncio.wait_for(a.refresh(), 1)  # and a stopped directory's refresh returns
