"""Taking nodes out of service and back, and pushing a node's config again (SPEC §2.8).

Drain and disable stop new work at once on this replica (the scheduler's paused set)
and, through NOTIFY, on the others (each also rereads the set at every sweep). Disable
also requeues what the node holds: in one transaction its leases run out
(`lifecycle.lapse`) and the sweep requeues each job with a new attempt, then tells the
node to drop its copy, as for any lease that runs out (SPEC §3.5)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cynode.orchestrator import lifecycle
from cynode.orchestrator.controlplane.nodeconfig import config_body
from cynode.orchestrator.controlplane.nodestate import NodeState
from cynode.orchestrator.controlplane.notify import Notifier
from cynode.orchestrator.controlplane.scheduler import Scheduler
from cynode.orchestrator.controlplane.settings import ControlPlaneSettings
from cynode.orchestrator.store import Node, NodeConfig, session_factory, transaction
from cynode.orchestrator.store.models import utcnow
from cynode.orchestrator.store.tables import JOBS, NODES


class UnknownNode(LookupError):
    pass


class StateChange(NamedTuple):
    node_id: str
    requeued: int


async def _find(conn: AsyncConnection, ref: str) -> str:
    """The id of the node whose id (any case) or slug is `ref`."""
    if not ref or "\x00" in ref or len(ref) > 128:
        raise UnknownNode(ref)
    row = (
        await conn.execute(
            sa.select(NODES.c.id).where(sa.or_(NODES.c.id == ref.upper(), NODES.c.slug == ref))
        )
    ).first()
    if row is None:
        raise UnknownNode(ref)
    return str(row[0])


class NodeAdmin:
    def __init__(
        self,
        engine: AsyncEngine,
        settings: ControlPlaneSettings,
        scheduler: Scheduler,
        notifier: Notifier,
        push_config: Callable[[str, str], None],
    ) -> None:
        self._engine = engine
        self._factory = session_factory(engine)
        self._settings = settings
        self._scheduler = scheduler
        self._notifier = notifier
        self._push_config = push_config

    async def find(self, ref: str) -> str:
        async with self._engine.connect() as conn:
            return await _find(conn, ref)

    async def set_state(self, ref: str, state: NodeState) -> StateChange:
        async with self._engine.begin() as conn:
            node_id = await _find(conn, ref)
            await conn.execute(
                NODES.update()
                .where(NODES.c.id == node_id)
                .values(admin_state=state.value, updated_at=utcnow())
            )
            await self._notifier.nodes_in_tx(conn, [node_id])
        # Paused here before its jobs are requeued, so none goes back to it.
        self._scheduler.pause(node_id, state is not NodeState.ACTIVE)
        held: list[str] = []
        if state is NodeState.DISABLED:

            async def lapse_held(conn: AsyncConnection, now: datetime) -> None:
                held.extend(
                    r[0]
                    for r in await conn.execute(
                        sa.select(JOBS.c.id).where(
                            JOBS.c.node_id == node_id, JOBS.c.status.in_(lifecycle.LIVE)
                        )
                    )
                )
                await lifecycle.lapse(conn, held, now)

            await self._scheduler.expire_leases(before=lapse_held)
        return StateChange(node_id, len(held))

    async def refresh_config(self, ref: str) -> tuple[str, str]:
        """Issues the node's config again under a new version, even if nothing in it
        changed, and tells the node (here, or through the replica holding its stream)."""
        async with transaction(self._factory) as session:
            node_id = await _find(await session.connection(), ref)
            node = await session.get(Node, node_id)
            assert node is not None  # found just now, in this transaction
            row = NodeConfig(node_id=node_id, body=config_body(self._settings, node))
            session.add(row)
            await session.flush()
            version = row.config_version
            await self._notifier.config_in_tx(await session.connection(), node_id, version)
        self._push_config(node_id, version)
        return node_id, version
