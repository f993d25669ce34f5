"""The inference links of every replica (SPEC §10.3): each replica announces the links
it holds in the shared table `inference_links` (node, models, capacity, the address
where it takes forwarded calls) and reads the others' from it, so a request that
reaches a replica without a link for its model can be forwarded to one that has.

One background loop per replica does all of it, every `refresh_s` and whenever a local
link comes, goes or changes: it writes what changed, refreshes `seen_at` on its own
rows, reads the other replicas' live rows into an in-memory snapshot (the request path
never waits for the database), and deletes rows nobody refreshed for `expire_s` (a
replica that died without withdrawing them)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from cynode.orchestrator.inference.links import LinkRegistry
from cynode.orchestrator.store import InferenceLinkRecord, utcnow

log = logging.getLogger(__name__)

LINKS: sa.Table = InferenceLinkRecord.__table__  # type: ignore[attr-defined]

# How often a replica refreshes its rows and rereads the others'.
REFRESH_S = 2.0
# A row not refreshed for this long is a dead replica's: ignored, then deleted. Several
# refreshes, so one slow round (or clocks a few seconds apart) does not drop live links.
EXPIRE_S = 10.0


@dataclass(frozen=True)
class RemoteLink:
    """A link another replica holds, as its row says."""

    node_id: str
    replica_id: str
    address: str
    models: frozenset[str]
    capacity: int


# What a local link is announced as: (models, capacity).
_Announced = tuple[tuple[str, ...], int]


class LinkDirectory:
    def __init__(
        self,
        engine: AsyncEngine,
        links: LinkRegistry,
        replica_id: str,
        *,
        refresh_s: float = REFRESH_S,
        expire_s: float = EXPIRE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._links = links
        self.replica_id = replica_id
        self.refresh_s = refresh_s
        self.expire_s = expire_s
        self._clock = clock
        # Where other replicas reach this one (host:port of the gateway's gRPC); empty
        # until the gateway's port is bound, and nothing is announced before.
        self.address = ""
        self._announced: dict[str, _Announced] = {}
        self._remote: list[RemoteLink] = []
        # Addresses that failed a forwarded call, skipped until the time noted.
        self._suspect: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._rounds = 0
        self._round_done = asyncio.Condition()

    # -- life ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="inference-directory")

    async def stop(self) -> None:
        """Stops the loop and withdraws this replica's rows (the others stop forwarding
        here at their next refresh, not after `expire_s`)."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        try:
            async with self._engine.begin() as conn:
                await conn.execute(sa.delete(LINKS).where(LINKS.c.replica_id == self.replica_id))
        except Exception:
            log.warning("could not withdraw this replica's inference links", exc_info=True)

    def changed(self) -> None:
        """A local link came, went or changed: the loop writes it now."""
        self._wake.set()

    async def refresh(self) -> None:
        """Waits for one full round that started after this call (tests, a request
        that found its model nowhere)."""
        async with self._round_done:
            target = self._rounds + 2 if self._task is not None else self._rounds
            self._wake.set()
            await self._round_done.wait_for(lambda: self._rounds >= target)

    # -- what the router reads -----------------------------------------------------------

    def models(self) -> dict[str, int]:
        """Every model the other replicas' links serve, with how many links serve it."""
        counts: dict[str, int] = {}
        for link in self._remote:
            for model in link.models:
                counts[model] = counts.get(model, 0) + 1
        return counts

    def holders(self, model: str) -> list[RemoteLink]:
        """The other replicas' links that serve `model`, but for addresses that failed
        a call lately; the largest capacity first."""
        now = self._clock()
        return sorted(
            (
                link
                for link in self._remote
                if model in link.models and self._suspect.get(link.address, 0.0) <= now
            ),
            key=lambda link: -link.capacity,
        )

    def suspect(self, address: str) -> None:
        """A forwarded call to `address` failed before any answer: skip it for a while."""
        self._suspect[address] = self._clock() + self.expire_s

    # -- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self._round()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("inference link directory round failed", exc_info=True)
            async with self._round_done:
                self._rounds += 1
                self._round_done.notify_all()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.refresh_s)
            self._wake.clear()

    def _local(self) -> dict[str, _Announced]:
        return {
            link.node_id: (tuple(sorted(link.models)), link.capacity)
            for link in self._links
            if not link.closed
        }

    async def _round(self) -> None:
        now = utcnow()
        cutoff = now - timedelta(seconds=self.expire_s)
        local = self._local() if self.address else {}
        gone = [node for node in self._announced if node not in local]
        fresh = {n: v for n, v in local.items() if self._announced.get(n) != v}
        async with self._engine.begin() as conn:
            if gone:
                await conn.execute(
                    sa.delete(LINKS).where(
                        LINKS.c.node_id.in_(gone), LINKS.c.replica_id == self.replica_id
                    )
                )
            if fresh:
                # Delete and insert: the row may be another replica's, from before the
                # node moved here.
                await conn.execute(sa.delete(LINKS).where(LINKS.c.node_id.in_(list(fresh))))
                await conn.execute(
                    sa.insert(LINKS),
                    [
                        {
                            "node_id": node,
                            "replica_id": self.replica_id,
                            "address": self.address,
                            "models": list(models),
                            "capacity": capacity,
                            "seen_at": now,
                        }
                        for node, (models, capacity) in fresh.items()
                    ],
                )
            await conn.execute(
                sa.update(LINKS).where(LINKS.c.replica_id == self.replica_id).values(seen_at=now)
            )
            await conn.execute(sa.delete(LINKS).where(LINKS.c.seen_at < cutoff))
            rows = (
                await conn.execute(
                    sa.select(
                        LINKS.c.node_id,
                        LINKS.c.replica_id,
                        LINKS.c.address,
                        LINKS.c.models,
                        LINKS.c.capacity,
                    ).where(LINKS.c.replica_id != self.replica_id)
                )
            ).all()
        self._announced = local
        self._remote = [
            RemoteLink(node, replica, address, frozenset(models or ()), max(1, capacity))
            for node, replica, address, models, capacity in rows
            if node not in local
        ]
        clock = self._clock()
        self._suspect = {a: t for a, t in self._suspect.items() if t > clock}
