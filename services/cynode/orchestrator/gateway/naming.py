"""Task names unique per user: a clash gets `-2`, `-3`, ... appended."""

from __future__ import annotations

from sqlmodel import col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from cynode.orchestrator.store import Task


def next_free_name(base: str, taken: set[str]) -> str:
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


async def pick_name(session: AsyncSession, user_id: str, base: str) -> str:
    """The name to try; a concurrent insert may still take it first, so callers retry
    on the unique constraint."""
    rows = await session.exec(
        select(Task.name).where(
            Task.user_id == user_id,
            or_(col(Task.name) == base, col(Task.name).startswith(f"{base}-", autoescape=True)),
        )
    )
    return next_free_name(base, {name for name in rows if name is not None})
