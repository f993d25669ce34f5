"""What administrators see of the fleet: NodeAdminService.ListNodes (on the user
gateway) and `list_nodes` for `cynode-orchestrator nodes`."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import grpc
import sqlalchemy as sa
from google.protobuf import json_format
from sqlalchemy.ext.asyncio import AsyncEngine

from cynode.gateway.v1 import nodes_pb2, nodes_pb2_grpc
from cynode.orchestrator.lifecycle import LIVE
from cynode.orchestrator.store.models import utcnow
from cynode.orchestrator.store.tables import JOBS, NODES

CONFIGS = NODES.metadata.tables["node_configs"]
DEFAULT_STALE_AFTER = timedelta(seconds=30)


class PrincipalLike(Protocol):
    @property
    def is_admin(self) -> bool: ...


# The gateway's Authenticator.authenticate: aborts the call itself when the user token
# is missing or bad, and may be a plain or an async function.
Authenticate = Callable[
    [grpc.aio.ServicerContext[Any, Any]], "PrincipalLike | Awaitable[PrincipalLike]"
]


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    node_slug: str
    status: str
    last_heartbeat_at: datetime | None
    inference_supported: bool
    max_concurrency: int
    running_jobs: int
    config_version: str | None
    config_status: str | None
    # The last capability report as stored (its proto JSON form).
    capability: dict[str, Any] | None = None


def _effective_status(status: str, last: datetime | None, cutoff: datetime) -> str:
    # A replica that died cannot mark its nodes offline; a stale heartbeat says it.
    if status == "online" and (last is None or last < cutoff):
        return "offline"
    return status


async def list_nodes(
    engine: AsyncEngine, stale_after: timedelta = DEFAULT_STALE_AFTER
) -> list[NodeInfo]:
    cutoff = utcnow() - stale_after
    async with engine.connect() as conn:
        nodes = list(await conn.execute(sa.select(NODES).order_by(NODES.c.slug)))
        running = dict(
            (r.node_id, r.n)
            for r in await conn.execute(
                sa.select(JOBS.c.node_id, sa.func.count().label("n"))
                .where(JOBS.c.status.in_(LIVE), JOBS.c.node_id.is_not(None))
                .group_by(JOBS.c.node_id)
            )
        )
        newest = (
            sa.select(CONFIGS.c.node_id, sa.func.max(CONFIGS.c.config_version).label("v"))
            .group_by(CONFIGS.c.node_id)
            .subquery()
        )
        configs = {
            r.node_id: (r.config_version, r.ack_status)
            for r in await conn.execute(
                sa.select(CONFIGS.c.node_id, CONFIGS.c.config_version, CONFIGS.c.ack_status).join(
                    newest,
                    sa.and_(
                        newest.c.node_id == CONFIGS.c.node_id,
                        newest.c.v == CONFIGS.c.config_version,
                    ),
                )
            )
        }
    out = []
    for n in nodes:
        version, ack = configs.get(n.id, (None, None))
        out.append(
            NodeInfo(
                node_id=n.id,
                node_slug=n.slug,
                status=_effective_status(n.status, n.last_heartbeat_at, cutoff),
                last_heartbeat_at=n.last_heartbeat_at,
                inference_supported=n.inference_supported,
                max_concurrency=n.max_concurrency,
                running_jobs=int(running.get(n.id, 0)),
                config_version=version,
                config_status=(ack or "pending") if version else None,
                capability=n.capability or None,
            )
        )
    return out


async def inference_path_available(
    engine: AsyncEngine, stale_after: timedelta = DEFAULT_STALE_AFTER
) -> bool:
    """An inference-capable node is connected to some replica and heartbeating."""
    cutoff = utcnow() - stale_after
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.select(NODES.c.id)
                .where(
                    NODES.c.status == "online",
                    NODES.c.inference_supported.is_(True),
                    NODES.c.last_heartbeat_at >= cutoff,
                )
                .limit(1)
            )
        ).first()
    return row is not None


class NodeAdminServicer(nodes_pb2_grpc.NodeAdminServiceServicer):
    def __init__(
        self, engine: AsyncEngine, authenticate: Authenticate, stale_after: timedelta
    ) -> None:
        self._engine = engine
        self._authenticate = authenticate
        self._stale_after = stale_after

    async def ListNodes(
        self,
        request: nodes_pb2.ListNodesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> nodes_pb2.ListNodesResponse:
        principal = self._authenticate(context)
        if inspect.isawaitable(principal):
            principal = await principal
        if not principal.is_admin:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "administrators only")
        resp = nodes_pb2.ListNodesResponse()
        for info in await list_nodes(self._engine, self._stale_after):
            item = resp.nodes.add(
                node_id=info.node_id,
                node_slug=info.node_slug,
                status=info.status,
                inference_supported=info.inference_supported,
                max_concurrency=info.max_concurrency,
                running_jobs=info.running_jobs,
                config_version=info.config_version or "",
                config_status=info.config_status or "",
            )
            if info.last_heartbeat_at is not None:
                item.last_heartbeat_at.FromDatetime(info.last_heartbeat_at)
            if info.capability:
                # Stored by NodeService from the same message type, so it parses back;
                # a report from a newer schema keeps what this one knows.
                json_format.ParseDict(info.capability, item.capability, ignore_unknown_fields=True)
        return resp
