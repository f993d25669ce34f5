"""One database connection kept by a loop that writes many small transactions.

The scheduler and the ingest writer commit dozens of times a second under load. Taking a
pooled connection for each costs a pre-ping round trip (Postgres) and a reset ROLLBACK on
return (both backends); a held connection pays neither. Any error drops it, so the next
transaction starts on a fresh one (a restarted database, a broken socket), and one left
idle longer than `idle_seconds` goes back to the pool, whose pre-ping checks the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


class HeldConnection:
    def __init__(self, engine: AsyncEngine, idle_seconds: float = 10.0) -> None:
        self._engine = engine
        self._idle = idle_seconds
        self._conn: AsyncConnection | None = None
        self._used = 0.0
        # A connection runs one transaction at a time; a second caller waits its turn.
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A transaction on the held connection: committed on success, rolled back (and
        the connection dropped) on error."""
        async with self._lock:
            now = time.monotonic()
            if self._conn is not None and now - self._used > self._idle:
                await self._discard(self._conn)
                self._conn = None
            if self._conn is None:
                self._conn = await self._engine.connect()
            self._used = now
            conn = self._conn
            try:
                async with conn.begin():
                    yield conn
            except BaseException:
                self._conn = None
                await self._discard(conn)
                raise

    async def close(self) -> None:
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await self._discard(conn)

    @staticmethod
    async def _discard(conn: AsyncConnection) -> None:
        # A broken connection may fail to close; the pool invalidates it either way.
        with contextlib.suppress(Exception):
            await conn.close()
