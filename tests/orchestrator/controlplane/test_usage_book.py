"""The usage book's writer on SQLite and Postgres: rows recorded together share one
insert, every row lands, and a failed insert loses only its own rows."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from cynode.orchestrator.inference.router import Outcome
from cynode.orchestrator.inference.usage import ModelUsage, UsageBook
from cynode.orchestrator.store import session_factory
from cynode.orchestrator.store.tables import USAGE


def outcome(user: str, model: str = "m:1", prompt: int = 3, completion: int = 5) -> Outcome:
    return Outcome(user, model, "NODE", "chat", prompt, completion)


def count_inserts(engine: AsyncEngine) -> list[int]:
    """How many rows each INSERT into inference_usage carried, in order."""
    seen: list[int] = []

    @sa.event.listens_for(engine.sync_engine, "before_cursor_execute")
    def before(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO INFERENCE_USAGE"):
            seen.append(len(params) if isinstance(params, list) else 1)

    return seen


async def test_rows_recorded_together_share_one_insert(engine: AsyncEngine) -> None:
    book = UsageBook(engine, session_factory(engine))
    inserts = count_inserts(engine)
    for i in range(5):
        book.record(outcome("U1", prompt=i, completion=10 * i))
    book.record(outcome("U2", model="other:2"))
    await book.flush()
    assert sum(inserts) == 6 and len(inserts) == 1
    book.record(outcome("U1"))
    await book.flush()
    assert sum(inserts) == 7 and len(inserts) == 2
    assert await book.by_model("U1") == [ModelUsage("m:1", 6, 0 + 1 + 2 + 3 + 4 + 3, 105)]
    assert await book.by_model("U2") == [ModelUsage("other:2", 1, 3, 5)]
    async with engine.connect() as conn:
        ids = [r.id for r in await conn.execute(sa.select(USAGE.c.id))]
    assert len(set(ids)) == 7


async def test_a_failed_insert_is_logged_and_later_rows_still_land(
    engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    book = UsageBook(engine, session_factory(engine))
    book.record(outcome(None))  # type: ignore[arg-type]  # user_id NOT NULL: refused
    with caplog.at_level(logging.ERROR, "cynode.orchestrator.inference.usage"):
        await book.flush()
    assert "could not record the usage of 1 request(s)" in caplog.text
    book.record(outcome("U3"))
    await book.flush()
    assert await book.by_model("U3") == [ModelUsage("m:1", 1, 3, 5)]
