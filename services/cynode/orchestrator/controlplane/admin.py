"""What administrators see of the fleet and do to it: NodeAdminService (on the user
gateway: list, get, drain, disable, enable, refresh config) and `list_nodes`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import grpc
import sqlalchemy as sa
from google.protobuf import json_format
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from cynode.gateway.v1 import nodes_pb2, nodes_pb2_grpc
from cynode.orchestrator import audit
from cynode.orchestrator.audit import (
    NODE_DISABLE,
    NODE_DRAIN,
    NODE_ENABLE,
    NODE_GET,
    NODE_LIST,
    NODE_REFRESH_CONFIG,
)
from cynode.orchestrator.auth.admins import Authenticate, require_admin
from cynode.orchestrator.controlplane.nodeadmin import NodeAdmin, StateChange, UnknownNode
from cynode.orchestrator.controlplane.nodestate import NodeState
from cynode.orchestrator.errors import client_address
from cynode.orchestrator.lifecycle import LIVE
from cynode.orchestrator.store import session_factory
from cynode.orchestrator.store.models import utcnow
from cynode.orchestrator.store.tables import JOBS, NODES

CONFIGS = NODES.metadata.tables["node_configs"]
DEFAULT_STALE_AFTER = timedelta(seconds=30)


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
    admin_state: str = NodeState.ACTIVE.value


def _effective_status(
    status: str, last: datetime | None, cutoff: datetime, admin_state: str = NodeState.ACTIVE
) -> str:
    # A replica that died cannot mark its nodes offline; a stale heartbeat says it.
    if status == "online" and (last is None or last < cutoff):
        return "offline"
    # Connected but taken out of service: what the administrator set.
    if status == "online" and admin_state != NodeState.ACTIVE:
        return admin_state
    return status


async def list_nodes(
    engine: AsyncEngine, stale_after: timedelta = DEFAULT_STALE_AFTER, node_id: str | None = None
) -> list[NodeInfo]:
    """Every node, by slug (or only `node_id`)."""
    cutoff = utcnow() - stale_after
    async with engine.connect() as conn:
        query = sa.select(NODES).order_by(NODES.c.slug)
        if node_id is not None:
            query = query.where(NODES.c.id == node_id)
        nodes = list(await conn.execute(query))
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
                status=_effective_status(n.status, n.last_heartbeat_at, cutoff, n.admin_state),
                last_heartbeat_at=n.last_heartbeat_at,
                inference_supported=n.inference_supported,
                max_concurrency=n.max_concurrency,
                running_jobs=int(running.get(n.id, 0)),
                config_version=version,
                config_status=(ack or "pending") if version else None,
                capability=n.capability or None,
                admin_state=n.admin_state,
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


def _summary(info: NodeInfo) -> nodes_pb2.NodeSummary:
    item = nodes_pb2.NodeSummary(
        node_id=info.node_id,
        node_slug=info.node_slug,
        status=info.status,
        inference_supported=info.inference_supported,
        max_concurrency=info.max_concurrency,
        running_jobs=info.running_jobs,
        config_version=info.config_version or "",
        config_status=info.config_status or "",
        admin_state=info.admin_state,
    )
    if info.last_heartbeat_at is not None:
        item.last_heartbeat_at.FromDatetime(info.last_heartbeat_at)
    if info.capability:
        # Stored by NodeService from the same message type, so it parses back;
        # a report from a newer schema keeps what this one knows.
        json_format.ParseDict(info.capability, item.capability, ignore_unknown_fields=True)
    return item


Context = grpc.aio.ServicerContext[Any, Any]


class NodeAdminServicer(nodes_pb2_grpc.NodeAdminServiceServicer):
    def __init__(
        self,
        engine: AsyncEngine,
        authenticate: Authenticate,
        stale_after: timedelta,
        admin: NodeAdmin | None = None,
    ) -> None:
        self._engine = engine
        self._factory = session_factory(engine)
        self._authenticate = authenticate
        self._stale_after = stale_after
        self._admin = admin

    async def _gate(self, context: Context, action: str, node: str = "") -> Actor:
        detail = {"target": node} if node else {}
        who = await require_admin(self._authenticate, context, self._factory, action, **detail)
        return Actor(
            getattr(who, "user_id", None), getattr(who, "handle", None), client_address(context)
        )

    async def _node_id(self, context: Context, ref: str) -> str:
        admin = self._admin
        if admin is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "no control plane here")
        try:
            return await admin.find(ref)
        except UnknownNode:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no node {ref!r}")

    async def ListNodes(
        self, request: nodes_pb2.ListNodesRequest, context: Context
    ) -> nodes_pb2.ListNodesResponse:
        await self._gate(context, NODE_LIST)
        resp = nodes_pb2.ListNodesResponse()
        resp.nodes.extend(_summary(i) for i in await list_nodes(self._engine, self._stale_after))
        return resp

    async def GetNode(
        self, request: nodes_pb2.GetNodeRequest, context: Context
    ) -> nodes_pb2.NodeSummary:
        await self._gate(context, NODE_GET, request.node_id)
        node_id = await self._node_id(context, request.node_id)
        [info] = await list_nodes(self._engine, self._stale_after, node_id)
        return _summary(info)

    async def _set(self, context: Context, ref: str, state: NodeState, action: str) -> StateChange:
        actor = await self._gate(context, action, ref)
        node_id = await self._node_id(context, ref)
        assert self._admin is not None  # _node_id aborted otherwise
        change = await self._admin.set_state(node_id, state)
        await actor.record(self._factory, action, node_id, requeued=change.requeued)
        return change

    async def DrainNode(
        self, request: nodes_pb2.DrainNodeRequest, context: Context
    ) -> nodes_pb2.DrainNodeResponse:
        change = await self._set(context, request.node_id, NodeState.DRAINING, NODE_DRAIN)
        return nodes_pb2.DrainNodeResponse(node_id=change.node_id, drained=True)

    async def DisableNode(
        self, request: nodes_pb2.DisableNodeRequest, context: Context
    ) -> nodes_pb2.DisableNodeResponse:
        change = await self._set(context, request.node_id, NodeState.DISABLED, NODE_DISABLE)
        return nodes_pb2.DisableNodeResponse(
            node_id=change.node_id, disabled=True, requeued=change.requeued
        )

    async def EnableNode(
        self, request: nodes_pb2.EnableNodeRequest, context: Context
    ) -> nodes_pb2.EnableNodeResponse:
        change = await self._set(context, request.node_id, NodeState.ACTIVE, NODE_ENABLE)
        return nodes_pb2.EnableNodeResponse(node_id=change.node_id, enabled=True)

    async def RefreshNodeConfig(
        self, request: nodes_pb2.RefreshNodeConfigRequest, context: Context
    ) -> nodes_pb2.RefreshNodeConfigResponse:
        actor = await self._gate(context, NODE_REFRESH_CONFIG, request.node_id)
        node_id = await self._node_id(context, request.node_id)
        assert self._admin is not None
        node_id, version = await self._admin.refresh_config(node_id)
        await actor.record(self._factory, NODE_REFRESH_CONFIG, node_id, config_version=version)
        return nodes_pb2.RefreshNodeConfigResponse(node_id=node_id, config_version=version)


@dataclass(frozen=True)
class Actor:
    user_id: str | None
    handle: str | None
    client: str

    async def record(
        self, factory: async_sessionmaker[AsyncSession], action: str, node_id: str, **detail: Any
    ) -> None:
        await audit.record(
            factory,
            action,
            "ok",
            user_id=self.user_id,
            handle=self.handle,
            client=self.client,
            node_id=node_id,
            **detail,
        )
