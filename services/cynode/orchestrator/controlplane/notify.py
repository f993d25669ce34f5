"""Wake-ups across replicas: Postgres LISTEN/NOTIFY on one channel.

Payloads are `<replica>|jobs` (queued work or a cancel: run the scheduler),
`<replica>|tasks|id,id,…` (tasks changed: wake WatchTask streams here),
`<replica>|nodes|id,id,…` (an administrator drained, disabled or enabled nodes) and
`<replica>|config|<node id>,<config version>` (a node's config was issued again: tell
the node if its stream is here). A replica
ignores its own messages. NOTIFY is sent inside the writing transaction, so a woken
replica always sees the rows. SQLite has one replica and needs none of this.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(__name__)

# Postgres caps a payload at 8000 bytes; ULIDs are 26 characters plus a comma.
_IDS_PER_NOTIFY = 250


class Notifier:
    """No-op base used on SQLite."""

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def jobs_in_tx(self, conn: AsyncConnection) -> None:
        return None

    async def tasks_in_tx(self, conn: AsyncConnection, task_ids: Iterable[str]) -> None:
        return None

    async def jobs(self) -> None:
        return None

    async def nodes_in_tx(self, conn: AsyncConnection, node_ids: Iterable[str]) -> None:
        return None

    async def config_in_tx(self, conn: AsyncConnection, node_id: str, version: str) -> None:
        return None


def _ignore(*_args: Any) -> None:
    return None


class PgNotifier(Notifier):
    def __init__(
        self,
        engine: AsyncEngine,
        channel: str,
        replica_id: str,
        on_jobs: Callable[[], None],
        on_tasks: Callable[[list[str]], None],
        on_nodes: Callable[[list[str]], None] = _ignore,
        on_config: Callable[[str, str], None] = _ignore,
    ) -> None:
        self._engine = engine
        self._channel = channel
        self._replica = replica_id
        self._on_jobs = on_jobs
        self._on_tasks = on_tasks
        self._on_nodes = on_nodes
        self._on_config = on_config
        self._conn: AsyncConnection | None = None
        self._driver: Any = None

    async def start(self) -> None:
        # A pooled connection held for the process's life; asyncpg delivers the callbacks.
        self._conn = await self._engine.connect()
        raw = await self._conn.get_raw_connection()
        self._driver = raw.driver_connection
        await self._driver.add_listener(self._channel, self._received)

    async def stop(self) -> None:
        if self._conn is None:
            return
        try:
            await self._driver.remove_listener(self._channel, self._received)
        except Exception:  # the connection may already be gone
            log.debug("remove_listener failed", exc_info=True)
        await self._conn.close()
        self._conn = None

    def _received(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        replica, _, rest = payload.partition("|")
        if replica == self._replica:
            return
        kind, _, ids = rest.partition("|")
        if kind == "jobs":
            self._on_jobs()
        elif kind == "tasks" and ids:
            self._on_tasks(ids.split(","))
        elif kind == "nodes" and ids:
            self._on_nodes(ids.split(","))
        elif kind == "config" and ids.count(",") == 1:
            node_id, version = ids.split(",")
            self._on_config(node_id, version)

    async def jobs_in_tx(self, conn: AsyncConnection) -> None:
        await self._send(conn, f"{self._replica}|jobs")

    async def tasks_in_tx(self, conn: AsyncConnection, task_ids: Iterable[str]) -> None:
        ids = sorted(task_ids)
        for start in range(0, len(ids), _IDS_PER_NOTIFY):
            part = ",".join(ids[start : start + _IDS_PER_NOTIFY])
            await self._send(conn, f"{self._replica}|tasks|{part}")

    async def jobs(self) -> None:
        async with self._engine.begin() as conn:
            await self.jobs_in_tx(conn)

    async def nodes_in_tx(self, conn: AsyncConnection, node_ids: Iterable[str]) -> None:
        ids = sorted(node_ids)
        for start in range(0, len(ids), _IDS_PER_NOTIFY):
            part = ",".join(ids[start : start + _IDS_PER_NOTIFY])
            await self._send(conn, f"{self._replica}|nodes|{part}")

    async def config_in_tx(self, conn: AsyncConnection, node_id: str, version: str) -> None:
        await self._send(conn, f"{self._replica}|config|{node_id},{version}")

    async def _send(self, conn: AsyncConnection, payload: str) -> None:
        await conn.execute(
            sa.select(sa.func.pg_notify(sa.literal(self._channel), sa.literal(payload)))
        )
