"""tables.Many: an executemany UPDATE that writes exactly what conn.execute would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from cynode.orchestrator.lifecycle.status import Status
from cynode.orchestrator.simnode.harness import enqueue_jobs, make_user
from cynode.orchestrator.store.models import UTCDateTime, utcnow
from cynode.orchestrator.store.tables import (
    ATTEMPTS,
    JOBS,
    Many,
    _sqlite_utc_text,
)

_STMT = (
    JOBS.update()
    .where(JOBS.c.id == sa.bindparam("b_id"), JOBS.c.status == Status.QUEUED)
    .values(
        status=Status.RUNNING,
        attempt=sa.bindparam("b_attempt"),
        lease_expires_at=sa.bindparam("b_lease"),
        stdout_truncated=sa.bindparam("b_trunc"),
        stdout=sa.bindparam("b_out"),
    )
)


async def _rows(engine: AsyncEngine, ids: list[str]) -> list[tuple[object, ...]]:
    cols = (JOBS.c.status, JOBS.c.attempt, JOBS.c.lease_expires_at, JOBS.c.stdout_truncated)
    async with engine.connect() as conn:
        result = await conn.execute(
            sa.select(*cols, JOBS.c.stdout).where(JOBS.c.id.in_(ids)).order_by(JOBS.c.id)
        )
        return [tuple(r) for r in result]


async def test_many_matches_execute(engine: AsyncEngine) -> None:
    user = await make_user(engine)
    jobs = [j for _, j in await enqueue_jobs(engine, user, 6)]
    lease = utcnow() + timedelta(seconds=30)

    def params(ids: list[str]) -> list[dict[str, object]]:
        return [
            {"b_id": j, "b_attempt": n + 1, "b_lease": lease, "b_trunc": n % 2 == 0, "b_out": b"x"}
            for n, j in enumerate(ids)
        ]

    async with engine.begin() as conn:
        await conn.execute(_STMT, params(jobs[:3]))
        many = Many(_STMT)
        await many.run(conn, params(jobs[3:]))
        await many.run(conn, [])  # nothing to do
        # The fixed `status == 'queued'` still guards: a second pass changes nothing.
        await many.run(conn, [{**p, "b_attempt": 9} for p in params(jobs[3:])])
    by_execute, by_many = await _rows(engine, jobs[:3]), await _rows(engine, jobs[3:])
    assert by_many == by_execute
    assert [r[0] for r in by_many] == [Status.RUNNING] * 3
    assert [r[1] for r in by_many] == [1, 2, 3]
    assert all(r[2] == lease for r in by_many)
    async with engine.connect() as conn:
        # A datetime written by Many compares in SQL like one written by execute.
        later = await conn.execute(
            sa.select(sa.func.count())
            .select_from(JOBS)
            .where(JOBS.c.lease_expires_at >= lease, JOBS.c.id.in_(jobs))
        )
        assert later.scalar_one() == 6
        # And is stored the same way (on SQLite a timestamp is text: the same format, or
        # string comparisons in SQL and raw readers go wrong).
        raw = await conn.execute(
            sa.select(sa.cast(JOBS.c.lease_expires_at, sa.String))
            .where(JOBS.c.id.in_(jobs))
            .order_by(JOBS.c.id)
        )
        texts = [r[0] for r in raw]
    assert len(set(texts)) == 1, texts


def test_many_needs_a_positional_paramstyle() -> None:
    with pytest.raises(TypeError, match="positional"):
        Many(_STMT)._plan(postgresql.psycopg2.dialect())  # type: ignore[no-untyped-call]


async def test_many_rolls_back_with_its_transaction(engine: AsyncEngine) -> None:
    user = await make_user(engine)
    jobs = [j for _, j in await enqueue_jobs(engine, user, 2)]
    rows = [
        {"b_id": j, "b_attempt": 1, "b_lease": utcnow(), "b_trunc": False, "b_out": b""}
        for j in jobs
    ]
    with pytest.raises(RuntimeError):
        async with engine.begin() as conn:
            await Many(_STMT).run(conn, rows)  # the transaction's first write
            raise RuntimeError("boom")
    assert [r[0] for r in await _rows(engine, jobs)] == [Status.QUEUED, Status.QUEUED]


def test_insert_refuses_a_column_it_does_not_bind() -> None:
    # `id` has a Python default: SQLAlchemy would add it as a bind Many cannot fill.
    stmt = ATTEMPTS.insert().values(job_id=sa.bindparam("b_job_id"))
    with pytest.raises(TypeError, match="not bound"):
        Many(stmt)._plan(postgresql.asyncpg.dialect())  # type: ignore[no-untyped-call]


def test_sqlite_datetime_text_matches_sqlalchemys() -> None:
    dialect = sqlite.dialect()  # type: ignore[no-untyped-call]
    general = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert general is not None
    plus_two = timezone(timedelta(hours=2))
    for moment in (
        datetime(2026, 1, 2, 3, 4, 5, 0, tzinfo=UTC),
        datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 3, 1, 1, 30, 0, 120, tzinfo=plus_two),  # another zone: to UTC
        utcnow(),
    ):
        assert _sqlite_utc_text(moment) == general(moment)
    assert _sqlite_utc_text(None) is None
    with pytest.raises(ValueError, match="naive"):
        _sqlite_utc_text(datetime(2026, 1, 1))  # naive
