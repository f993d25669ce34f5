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
USER_ENABLE = "user_enable"
USER_UPDATE = "user_update"
USER_REVOKE_SESSIONS = "user_revoke_sessions"
# Reads by administrators are audited only when refused (who tried, from where).
USER_LIST = "user_list"
USER_GET = "user_get"
NODE_DRAIN = "node_drain"
NODE_DISABLE = "node_disable"
NODE_ENABLE = "node_enable"
NODE_REFRESH_CONFIG = "node_refresh_config"
NODE_LIST = "node_list"
NODE_GET = "node_get"
AUDIT_LIST = "audit_list"
# Secrets replaced in what a user sent a model (SPEC §10.5): kinds and counts only.
SECRET_REDACTED = "secret_redacted"


def audit_row(
    action: str,
    outcome: str,
    *,
    user_id: str | None = None,
    handle: str | None = None,
    client: str | None = None,
    node_id: str | None = None,
    **detail: Any,
) -> AuditLog:
    return AuditLog(
        action=action,
        outcome=outcome,
        user_id=user_id,
        node_id=node_id,
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
