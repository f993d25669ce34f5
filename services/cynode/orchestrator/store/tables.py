"""Core table handles and batch helpers: the hot paths use Core statements in batches
rather than ORM objects, to keep per-job round trips out of the dispatch loop. Statuses
are not here: their words and every write of them live in `cynode.orchestrator.lifecycle`."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import SQLModel

from cynode.orchestrator.store.models import UTCDateTime  # also registers the tables

JOBS: sa.Table = SQLModel.metadata.tables["jobs"]
TASKS: sa.Table = SQLModel.metadata.tables["tasks"]
ATTEMPTS: sa.Table = SQLModel.metadata.tables["job_attempts"]
CHUNKS: sa.Table = SQLModel.metadata.tables["job_output_chunks"]
NODES: sa.Table = SQLModel.metadata.tables["nodes"]
ATTACHMENTS: sa.Table = SQLModel.metadata.tables["task_attachments"]
ARTIFACTS: sa.Table = SQLModel.metadata.tables["artifacts"]
ARTIFACT_SETS: sa.Table = SQLModel.metadata.tables["artifact_sets"]
USERS: sa.Table = SQLModel.metadata.tables["users"]
USAGE: sa.Table = SQLModel.metadata.tables["inference_usage"]

# Stays well under SQLite's and asyncpg's bound-parameter limits.
IN_CHUNK = 500

T = TypeVar("T")


def chunked(items: Sequence[T], size: int = IN_CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def any_id(column: sa.ColumnElement[Any], postgres: bool) -> sa.ColumnElement[bool]:
    """`column` is one of the ids bound as `ids` (a list), as one statement whatever
    their number: `= ANY(:ids)` on Postgres, `IN (SELECT value FROM json_each(:ids))` on
    SQLite. An expanding IN renders a new statement for every count of ids, which
    Postgres then prepares again."""
    if postgres:
        return column == sa.any_(sa.bindparam("ids", type_=postgresql.ARRAY(sa.String)))
    each = sa.func.json_each(sa.bindparam("ids", type_=sa.JSON)).table_valued("value")
    return column.in_(sa.select(each.c.value))


def insert_ignoring_duplicates(dialect: str, table: sa.Table) -> Any:
    """INSERT … ON CONFLICT DO NOTHING on either backend."""
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


class Many:
    """An UPDATE or INSERT run for many rows at once without SQLAlchemy's per-row
    parameter work.

    Compiled once per dialect to its SQL text, bind order and each bind's type processor;
    each row (a mapping keyed by bind name) then becomes one tuple for the driver's
    executemany. Row values are the binds named `b_…`; any other bind is a fixed value of
    the statement (`attempt == 0`). An INSERT must bind every column it sets as
    `b_…` (see `insert`): a column default SQLAlchemy would fill in is refused.
    """

    def __init__(self, stmt: sa.Update | sa.Insert) -> None:
        self.stmt = stmt
        self._plans: dict[str, tuple[str, list[tuple[str | None, Any, Any]]]] = {}

    def _plan(self, dialect: sa.Dialect) -> tuple[str, list[tuple[str | None, Any, Any]]]:
        compiled = self.stmt.compile(dialect=dialect)
        if not compiled.positional or compiled.positiontup is None:
            raise TypeError(f"{dialect.name}: Many needs a positional paramstyle")
        slots: list[tuple[str | None, Any, Any]] = []
        for name in compiled.positiontup:
            bind = compiled.binds[name]
            # Both drivers take bytes as they are (SQLite's processor wraps a memoryview).
            process = (
                None
                if isinstance(bind.type, sa.LargeBinary)
                else _sqlite_utc_text
                if isinstance(bind.type, UTCDateTime) and dialect.name == "sqlite"
                else bind.type.dialect_impl(dialect).bind_processor(dialect)
            )
            if not name.startswith("b_"):
                if isinstance(self.stmt, sa.Insert):
                    raise TypeError(f"INSERT column {name!r} is not bound as b_{name}")
                # A fixed value of the statement itself; row values are bound as b_<name>.
                value = bind.effective_value
                slots.append((None, None, process(value) if process else value))
            else:
                slots.append((name, process, None))
        plan = (str(compiled), slots)
        self._plans[dialect.name] = plan
        return plan

    async def run(self, conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        sql, slots = self._plans.get(conn.dialect.name) or self._plan(conn.dialect)
        # Column by column: one comprehension per bind instead of a generator per row.
        columns: list[Sequence[Any]] = []
        for key, process, fixed in slots:
            if key is None:
                columns.append([fixed] * len(rows))
            elif process is None:
                columns.append([row[key] for row in rows])
            else:
                columns.append(_processed([row[key] for row in rows], process))
        params = list(zip(*columns, strict=True))
        if conn.dialect.name == "sqlite":
            # Straight to aiosqlite: one hop to its thread instead of three (cursor,
            # executemany, close). Same sqlite3 connection, so the same transaction.
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None  # a checked-out connection always has one
            await driver.executemany(sql, params)
        else:
            await conn.exec_driver_sql(sql, params)


def _processed(values: list[Any], process: Callable[[Any], Any]) -> list[Any]:
    """`process` over `values`, once per distinct object: a batch binds the same `now`
    or lease in every row."""
    out: list[Any] = []
    last: Any = _NOTHING
    done: Any = None
    for value in values:
        if value is not last:
            last, done = value, process(value)
        out.append(done)
    return out


_NOTHING = object()


def _sqlite_utc_text(value: datetime | None) -> str | None:
    """What UTCDateTime then SQLite's DATETIME processor make of `value` (the text form
    SQLite stores, `YYYY-MM-DD HH:MM:SS.ffffff` in UTC), in one step: their general
    version (a %-format over a dict) was the largest single cost of a batch's writes."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:26]


def insert(table: sa.Table, columns: Sequence[str]) -> Many:
    """A Many INSERT of `columns`, each bound as b_<column>."""
    return Many(table.insert().values({c: sa.bindparam(f"b_{c}") for c in columns}))
