"""Audit rows for security-relevant events. Details never carry a secret: callers pass
ids, handles and reasons only."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from cynode.orchestrator.store import AuditLog, transaction

LOGIN = "login"
REFRESH = "refresh"
REFRESH_REUSE = "refresh_reuse_detected"
LOGOUT = "logout"
USER_CREATE = "user_create"
USER_PASSWORD = "user_password"
USER_DISABLE = "user_disable"
# Secrets replaced in what a user sent a model (SPEC §10.5): kinds and counts only.
SECRET_REDACTED = "secret_redacted"


def audit_row(
    action: str,
    outcome: str,
    *,
    user_id: str | None = None,
    handle: str | None = None,
    client: str | None = None,
    **detail: Any,
) -> AuditLog:
    return AuditLog(
        action=action,
        outcome=outcome,
        user_id=user_id,
        handle=handle[:64] if handle else handle,
        client=client[:128] if client else client,
        detail=detail,
    )


def add_audit(session: AsyncSession, action: str, outcome: str, **kw: Any) -> None:
    session.add(audit_row(action, outcome, **kw))


async def record(
    factory: async_sessionmaker[AsyncSession], action: str, outcome: str, **kw: Any
) -> None:
    """An audit row in a transaction of its own (for outcomes that roll back the rest)."""
    async with transaction(factory) as session:
        add_audit(session, action, outcome, **kw)
