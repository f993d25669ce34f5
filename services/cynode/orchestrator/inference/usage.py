"""Per-user token usage (SPEC §10.6): one row per answered request, written in the
background so a stream never waits for the store, and summed per model when read."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from cynode.orchestrator.inference.router import Outcome
from cynode.orchestrator.store import InferenceUsage, User, transaction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelUsage:
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int


class UsageBook:
    def __init__(self, factory: async_sessionmaker[AsyncSession]) -> None:
        self._factory = factory
        self._writes: set[asyncio.Task[None]] = set()

    def record(self, outcome: Outcome) -> None:
        task = asyncio.create_task(self._write(outcome))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def flush(self) -> None:
        """Waits for the writes under way (tests, shutdown)."""
        if self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)

    async def _write(self, outcome: Outcome) -> None:
        try:
            async with transaction(self._factory) as session:
                session.add(
                    InferenceUsage(
                        user_id=outcome.user_id,
                        model=outcome.model[:200],
                        node_id=outcome.node_id,
                        kind=outcome.kind,
                        prompt_tokens=outcome.prompt_tokens,
                        completion_tokens=outcome.completion_tokens,
                    )
                )
        except Exception:
            log.exception("could not record the usage of a %s request", outcome.kind)

    async def user_id(self, handle: str) -> str | None:
        async with self._factory() as session:
            user = (await session.exec(select(User).where(User.handle == handle))).first()
        return user.id if user is not None else None

    async def by_model(self, user_id: str) -> list[ModelUsage]:
        u = InferenceUsage
        async with self._factory() as session:
            rows = await session.exec(
                select(
                    u.model,
                    sa.func.count(col(u.id)),
                    sa.func.coalesce(sa.func.sum(u.prompt_tokens), 0),
                    sa.func.coalesce(sa.func.sum(u.completion_tokens), 0),
                )
                .where(u.user_id == user_id)
                .group_by(col(u.model))
                .order_by(col(u.model))
            )
            return [ModelUsage(m, int(n), int(p), int(c)) for m, n, p, c in rows.all()]
