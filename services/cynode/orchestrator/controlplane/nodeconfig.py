"""The configuration a node gets: built from settings and what the node reported, stored
as a NodeConfig row whose ULID `config_version` changes only when the body does."""

from __future__ import annotations

from typing import Any

from google.protobuf.json_format import ParseDict
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from cynode.controlplane.v1 import nodes_pb2
from cynode.orchestrator.controlplane.settings import ControlPlaneSettings
from cynode.orchestrator.store import Node, NodeConfig
from cynode.orchestrator.store.models import utcnow

CONFIG_FORMAT_VERSION = 1


def config_body(settings: ControlPlaneSettings, node: Node) -> dict[str, Any]:
    """Everything but the version stamp; equal bodies mean no new version."""
    reported = node.capability.get("inference", {}) if node.capability else {}
    models = list(settings.allowed_models) or [str(m) for m in reported.get("models", [])]
    enabled = settings.inference_enabled and node.inference_supported
    return {
        "node_slug": node.slug,
        "sandbox": {
            "default_image": settings.sandbox_image,
            "timeouts": {
                "default_seconds": settings.default_timeout_seconds,
                "max_seconds": settings.max_timeout_seconds,
            },
            "limits": {
                "memory_mb": settings.memory_mb,
                "cpus": settings.cpus,
                "pids": settings.pids,
            },
            "max_output_bytes": settings.max_output_bytes,
        },
        "inference": {
            "enabled": enabled,
            "upstream": settings.inference_upstream if enabled else "",
            "allowed_models": models if enabled else [],
            "default_model": (settings.default_model or (models[0] if models else ""))
            if enabled
            else "",
        },
        "constraints": {
            "max_request_bytes": settings.max_request_bytes,
            "max_job_timeout_seconds": settings.max_timeout_seconds,
        },
    }


async def latest_config(session: AsyncSession, node_id: str) -> NodeConfig | None:
    # ULIDs sort by time, so the greatest config_version is the newest.
    stmt = (
        select(NodeConfig)
        .where(col(NodeConfig.node_id) == node_id)
        .order_by(col(NodeConfig.config_version).desc())
        .limit(1)
    )
    return (await session.exec(stmt)).first()


async def ensure_config(
    session: AsyncSession, settings: ControlPlaneSettings, node: Node
) -> tuple[NodeConfig, bool]:
    """The node's current config row, and whether it was just issued."""
    body = config_body(settings, node)
    current = await latest_config(session, node.id)
    if current is not None and current.body == body:
        return current, False
    row = NodeConfig(node_id=node.id, body=body, issued_at=utcnow())
    session.add(row)
    await session.flush()
    return row, True


def config_message(row: NodeConfig) -> nodes_pb2.GetNodeConfigResponse:
    msg = nodes_pb2.GetNodeConfigResponse(
        version=CONFIG_FORMAT_VERSION, config_version=row.config_version
    )
    ParseDict(row.body, msg)
    msg.issued_at.FromDatetime(row.issued_at)
    return msg
