"""NodeService: registration with the pre-shared key, capability reports, config delivery
and config acknowledgements. Everything but RegisterNode needs the node JWT."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from datetime import UTC
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select

from cynode.controlplane.v1 import nodes_pb2, nodes_pb2_grpc
from cynode.orchestrator.controlplane.nodeconfig import config_message, ensure_config
from cynode.orchestrator.controlplane.settings import ControlPlaneSettings
from cynode.orchestrator.controlplane.tokens import issue_node_token, require_node
from cynode.orchestrator.store import AuditLog, Node, NodeConfig, session_factory, transaction
from cynode.orchestrator.store.models import utcnow

log = logging.getLogger(__name__)

ACK_STATUSES = ("applied", "failed")
MAX_SLUG = 128


def capability_dict(report: nodes_pb2.CapabilityReport) -> dict[str, Any]:
    return MessageToDict(report, preserving_proto_field_name=True)


INLINE_REPORT_FIELDS = tuple(f.name for f in nodes_pb2.CapabilityReport.DESCRIPTOR.fields)


class CapabilityBodyError(ValueError):
    """A ReportCapabilityRequest that holds no report, or two."""


def requested_report(request: nodes_pb2.ReportCapabilityRequest) -> nodes_pb2.CapabilityReport:
    """The report of a request: wrapped in `capability` (our nodes) or inline (upstream's
    REST form, the report as the body itself). An empty report is refused rather than
    stored: a body of unknown fields parses to nothing."""
    inline = [name for name in INLINE_REPORT_FIELDS if _is_set(request, name)]
    if request.HasField("capability"):
        if inline:
            raise CapabilityBodyError(
                "give the report either wrapped in capability or as the body, not both "
                f"(also inline: {', '.join(inline)})"
            )
        report = request.capability
    else:
        report = nodes_pb2.CapabilityReport()
        for name in inline:
            value = getattr(request, name)
            if isinstance(value, Message):
                getattr(report, name).CopyFrom(value)
            else:
                setattr(report, name, value)
    if report.ByteSize() == 0:
        raise CapabilityBodyError(
            "no capability report in the body: send a CapabilityReport (version, node, "
            "platform, ...) as the body or wrapped in capability"
        )
    return report


def _is_set(message: Message, name: str) -> bool:
    field = message.DESCRIPTOR.fields_by_name[name]
    if field.message_type is not None:
        return message.HasField(name)
    return bool(getattr(message, name))


def apply_capability(node: Node, report: nodes_pb2.CapabilityReport) -> None:
    node.capability = capability_dict(report)
    node.name = report.node.name or node.name
    node.inference_supported = bool(report.inference.supported)
    node.max_concurrency = max(1, report.sandbox.max_concurrency or 1)
    node.worker_api_url = report.worker_api.base_url or None
    node.updated_at = utcnow()


class NodeServicer(nodes_pb2_grpc.NodeServiceServicer):
    def __init__(
        self,
        engine: AsyncEngine,
        settings: ControlPlaneSettings,
        on_config_changed: Callable[[str, str], None] | None = None,
    ) -> None:
        self._factory = session_factory(engine)
        self._settings = settings
        # Called with (node_id, config_version) when a node's config changes.
        self._on_config_changed = on_config_changed or (lambda _n, _v: None)

    async def RegisterNode(
        self,
        request: nodes_pb2.RegisterNodeRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> nodes_pb2.RegisterNodeResponse:
        slug = request.capability.node.node_slug
        ok = hmac.compare_digest(request.psk.encode(), self._settings.psk.encode())
        if not ok:
            await self._audit("node.register", "denied", None, {"node_slug": slug[:MAX_SLUG]})
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid pre-shared key")
        if not slug or len(slug) > MAX_SLUG:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "capability.node.node_slug")
        now = utcnow()
        async with transaction(self._factory) as session:
            node = (await session.exec(select(Node).where(col(Node.slug) == slug))).first()
            if node is None:
                node = Node(slug=slug, registered_at=now)
                session.add(node)
            apply_capability(node, request.capability)
            await session.flush()
            config, _ = await ensure_config(session, self._settings, node)
            session.add(
                AuditLog(
                    action="node.register", outcome="ok", node_id=node.id, detail={"slug": slug}
                )
            )
            node_id = node.id
            config_version = config.config_version
        token, expires = issue_node_token(
            self._settings.jwt_secret, node_id, slug, self._settings.node_jwt_ttl_seconds, now
        )
        log.info("node registered: %s (%s)", slug, node_id)
        resp = nodes_pb2.RegisterNodeResponse(
            version=1,
            orchestrator=nodes_pb2.OrchestratorInfo(
                base_url=self._settings.base_url,
                endpoints=nodes_pb2.OrchestratorEndpoints(
                    control_plane_grpc=self._settings.grpc_endpoint,
                    control_plane_rest=self._settings.rest_endpoint,
                ),
            ),
            auth=nodes_pb2.NodeAuth(node_jwt=token),
            initial_config_version=config_version,
            node_id=node_id,
        )
        resp.issued_at.FromDatetime(now)
        resp.auth.expires_at.FromDatetime(expires)
        return resp

    async def ReportCapability(
        self,
        request: nodes_pb2.ReportCapabilityRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> nodes_pb2.ReportCapabilityResponse:
        claims = await require_node(context, self._settings.jwt_secret)
        async with transaction(self._factory) as session:
            node = await session.get(Node, claims.node_id)
            if node is None:
                await context.abort(grpc.StatusCode.NOT_FOUND, "node not registered")
            try:
                report = requested_report(request)
            except CapabilityBodyError as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            if report.node.node_slug not in ("", node.slug):
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, "node_slug mismatch")
            apply_capability(node, report)
            config, changed = await ensure_config(session, self._settings, node)
            version = config.config_version
        if changed:
            self._on_config_changed(claims.node_id, version)
        return nodes_pb2.ReportCapabilityResponse(accepted=True)

    async def GetNodeConfig(
        self,
        request: nodes_pb2.GetNodeConfigRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> nodes_pb2.GetNodeConfigResponse:
        claims = await require_node(context, self._settings.jwt_secret)
        async with transaction(self._factory) as session:
            node = await session.get(Node, claims.node_id)
            if node is None:
                await context.abort(grpc.StatusCode.NOT_FOUND, "node not registered")
            config, _ = await ensure_config(session, self._settings, node)
        return config_message(config)

    async def AckNodeConfig(
        self,
        request: nodes_pb2.AckNodeConfigRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> nodes_pb2.AckNodeConfigResponse:
        claims = await require_node(context, self._settings.jwt_secret)
        if request.status not in ACK_STATUSES:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "status must be applied or failed"
            )
        async with transaction(self._factory) as session:
            stmt = select(NodeConfig).where(
                col(NodeConfig.config_version) == request.config_version,
                col(NodeConfig.node_id) == claims.node_id,
            )
            row = (await session.exec(stmt)).first()
            if row is None:
                await context.abort(grpc.StatusCode.NOT_FOUND, "unknown config_version")
            row.ack_status = request.status
            row.ack_error = (request.error or None) if request.status == "failed" else None
            row.ack_at = request.ack_at.ToDatetime(UTC) if request.HasField("ack_at") else utcnow()
            session.add(row)
        return nodes_pb2.AckNodeConfigResponse(accepted=True)

    async def _audit(
        self, action: str, outcome: str, node_id: str | None, detail: dict[str, Any]
    ) -> None:
        async with transaction(self._factory) as session:
            session.add(AuditLog(action=action, outcome=outcome, node_id=node_id, detail=detail))
