"""Both backends connect through SQLModel, migrate, and round-trip rows faithfully."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select

from cynode.orchestrator.store import (
    DatabaseUrlError,
    Job,
    Task,
    User,
    current_revision,
    head_revision,
    is_current,
    is_postgres,
    make_engine,
    normalize_url,
    session_factory,
    transaction,
    upgrade,
)


async def _user(engine: AsyncEngine, handle: str) -> User:
    async with transaction(session_factory(engine)) as s:
        user = User(handle=handle, password_hash="x")
        s.add(user)
    return user


async def test_migrated_to_head(db_engine: AsyncEngine) -> None:
    assert await current_revision(db_engine) == head_revision()
    assert await is_current(db_engine)
    await upgrade(db_engine)  # idempotent
    assert await is_current(db_engine)


async def test_round_trip_keeps_utc_bytes_and_json(db_engine: AsyncEngine) -> None:
    user = await _user(db_engine, f"u-{datetime.now(UTC).timestamp()}")
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    async with transaction(session_factory(db_engine)) as s:
        task = Task(user_id=user.id, input_mode="commands", commands=["echo a", "echo b"])
        s.add(task)
        await s.flush()
        s.add(Job(task_id=task.id, stdout=b"\xff\x00hi", started_at=when))
    async with session_factory(db_engine)() as s:
        job = (await s.exec(select(Job).where(Job.task_id == task.id))).one()
        got_task = await s.get(Task, task.id)
    assert got_task is not None and got_task.commands == ["echo a", "echo b"]
    assert job.stdout == b"\xff\x00hi"
    assert job.started_at == when and job.started_at.tzinfo is not None
    assert len(job.id) == 26 and job.id != task.id


async def test_task_names_unique_per_user(db_engine: AsyncEngine) -> None:
    a = await _user(db_engine, f"a-{datetime.now(UTC).timestamp()}")
    b = await _user(db_engine, f"b-{datetime.now(UTC).timestamp()}")
    factory = session_factory(db_engine)
    async with transaction(factory) as s:
        s.add(Task(user_id=a.id, name="build", input_mode="prompt"))
        s.add(Task(user_id=b.id, name="build", input_mode="prompt"))
    with pytest.raises(IntegrityError):
        async with transaction(factory) as s:
            s.add(Task(user_id=a.id, name="build", input_mode="prompt"))


async def test_naive_datetime_refused(db_engine: AsyncEngine) -> None:
    user = await _user(db_engine, f"n-{datetime.now(UTC).timestamp()}")
    with pytest.raises(sa.exc.StatementError, match="naive"):
        async with transaction(session_factory(db_engine)) as s:
            s.add(Job(task_id="x" * 26, started_at=datetime(2026, 1, 1)))
            s.add(
                Task(
                    user_id=user.id,
                    input_mode="prompt",
                    updated_at=datetime.now(UTC) - timedelta(1),
                )
            )


def test_backend_detection(db_url: str) -> None:
    engine = make_engine(db_url)
    assert is_postgres(engine) == db_url.startswith("postgresql")


@pytest.mark.parametrize(
    ("raw", "driver"),
    [
        ("postgres://u@h/db", "postgresql+asyncpg"),
        ("postgresql://u@h/db", "postgresql+asyncpg"),
        ("sqlite:////tmp/x.db", "sqlite+aiosqlite"),
    ],
)
def test_normalize_url(raw: str, driver: str) -> None:
    assert normalize_url(raw).drivername == driver


@pytest.mark.parametrize("raw", ["mysql://u@h/db", "not a url"])
def test_normalize_url_refuses(raw: str) -> None:
    with pytest.raises(DatabaseUrlError):
        normalize_url(raw)
