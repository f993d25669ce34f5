"""Reading the audit log: AuditService.ListAuditEvents (SPEC §2.10), administrators
only, newest first with the gateway's cursors. The rows are written by `audit`."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import sqlalchemy as sa
from google.protobuf import json_format
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from cynode.gateway.v1 import audit_pb2, audit_pb2_grpc
from cynode.orchestrator import audit
from cynode.orchestrator.auth.admins import require_admin
from cynode.orchestrator.auth.authenticator import Authenticator
from cynode.orchestrator.errors import Context, abort
from cynode.orchestrator.gateway.cursor import decode_cursor, encode_cursor
from cynode.orchestrator.gateway.validation import Invalid

AUDIT: sa.Table = SQLModel.metadata.tables["audit_log"]
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
# Filters on a column of at most this many characters; longer never matches.
_FILTERS = {"action": 64, "outcome": 16, "user_id": 26, "handle": 64, "node_id": 26}


def _event(row: sa.Row[tuple[object, ...]]) -> audit_pb2.AuditEvent:
    event = audit_pb2.AuditEvent(
        id=row.id,
        action=row.action,
        outcome=row.outcome,
        user_id=row.user_id or "",
        handle=row.handle or "",
        node_id=row.node_id or "",
        client=row.client or "",
    )
    at = row.at
    assert isinstance(at, datetime)
    event.at.FromDatetime(at)
    if row.detail:
        json_format.ParseDict(row.detail, event.detail)
    return event


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):  # type: ignore[misc]
    def __init__(
        self, factory: async_sessionmaker[AsyncSession], authenticator: Authenticator
    ) -> None:
        self._factory = factory
        self._authenticate = authenticator.authenticate

    async def ListAuditEvents(
        self, request: audit_pb2.ListAuditEventsRequest, context: Context
    ) -> audit_pb2.ListAuditEventsResponse:
        await require_admin(self._authenticate, context, self._factory, audit.AUDIT_LIST)
        if request.limit < 0:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, "limit must not be negative")
        limit = min(request.limit or DEFAULT_LIMIT, MAX_LIMIT)
        query = sa.select(AUDIT).order_by(AUDIT.c.id.desc()).limit(limit + 1)
        for name, width in _FILTERS.items():
            value = getattr(request, name)
            if value:
                if len(value) > width or "\x00" in value:
                    return audit_pb2.ListAuditEventsResponse()
                query = query.where(AUDIT.c[name] == value)
        if request.HasField("since"):
            query = query.where(AUDIT.c.at >= request.since.ToDatetime(tzinfo=UTC))
        if request.cursor:
            try:
                query = query.where(AUDIT.c.id < decode_cursor(request.cursor))
            except Invalid as exc:
                await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        async with self._factory() as session:
            rows = list(await (await session.connection()).execute(query))
        more = len(rows) > limit
        rows = rows[:limit]
        return audit_pb2.ListAuditEventsResponse(
            events=[_event(r) for r in rows],
            next_cursor=encode_cursor(rows[-1].id) if more and rows else "",
        )
