"""A Postgres schema of its own for each stack or test session, in database `test` of
the shared server, so runs side by side never see each other's rows."""

from __future__ import annotations

import asyncio
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import asyncpg

PG_DSN = os.environ.get("CYNODE_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def pg_execute(sql: str, dsn: str = PG_DSN) -> None:
    """Runs one statement. In a thread of its own, so it works with or without a
    running event loop (asyncio.run would unset pytest-asyncio's loop)."""

    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


@dataclass
class PgSchema:
    name: str
    dsn: str = PG_DSN

    @classmethod
    def create(cls, prefix: str, dsn: str = PG_DSN) -> PgSchema:
        """A fresh schema named `<prefix>_<random>`."""
        schema = cls(f"{prefix}_{secrets.token_hex(6)}", dsn)
        pg_execute(f'CREATE SCHEMA "{schema.name}"', dsn)
        return schema

    @property
    def url(self) -> str:
        """The database URL that puts the orchestrator in this schema."""
        return f"{self.dsn}?search_path={self.name}"

    def drop(self) -> None:
        pg_execute(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE', self.dsn)
