"""The node's side of NodeService: register with the PSK, hold the JWT, fetch and ack
config. The JWT is renewed by registering again (same node_slug = same node) when it
is about to expire or the server says UNAUTHENTICATED."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from cynode.controlplane.v1 import nodes_pb2, nodes_pb2_grpc

from .config import NodeConfig
from .state import NodeSessionState, StateDir

log = logging.getLogger(__name__)
T = TypeVar("T")

# Register again this long before the JWT expires.
RENEW_MARGIN = timedelta(seconds=60)
RPC_TIMEOUT_S = 15.0


def make_channel(config: NodeConfig, target: str | None = None) -> grpc.aio.Channel:
    target = target or config.grpc_target
    if not config.uses_tls:
        return grpc.aio.insecure_channel(target)
    roots = Path(config.ca_file).read_bytes() if config.ca_file else None
    return grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=roots))


def _now_ts() -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(datetime.now(UTC))
    return ts


class ControlPlaneClient:
    def __init__(
        self,
        config: NodeConfig,
        channel: grpc.aio.Channel,
        state: StateDir,
        capability: Callable[[], nodes_pb2.CapabilityReport],
    ) -> None:
        self.config = config
        self.channel = channel
        self.state = state
        self._capability = capability
        self._stub = nodes_pb2_grpc.NodeServiceStub(channel)  # type: ignore[no-untyped-call]
        self._session: NodeSessionState | None = None
        self._lock = asyncio.Lock()
        self.last_response: nodes_pb2.RegisterNodeResponse | None = None

    @property
    def node_id(self) -> str:
        return self._session.node_id if self._session else ""

    async def register(self) -> nodes_pb2.RegisterNodeResponse:
        if not self.config.psk:
            raise PermissionError("no PSK configured (set NODE_PSK or psk: in the config file)")
        request = nodes_pb2.RegisterNodeRequest(psk=self.config.psk, capability=self._capability())
        response: nodes_pb2.RegisterNodeResponse = await self._stub.RegisterNode(
            request, timeout=RPC_TIMEOUT_S
        )
        expires = (
            response.auth.expires_at.ToDatetime(tzinfo=UTC)
            if response.auth.HasField("expires_at")
            else datetime.now(UTC) + timedelta(hours=1)
        )
        self._session = NodeSessionState(response.auth.node_jwt, expires, response.node_id)
        self.state.save_session(self._session)
        self.last_response = response
        log.info("registered as %s (node_id=%s)", self.config.node_slug, response.node_id)
        return response

    def invalidate(self) -> None:
        """The server refused our JWT: the next call registers again."""
        self._session = None

    async def token(self) -> str:
        async with self._lock:
            if self._session is None or self._session.expires_within(RENEW_MARGIN):
                await self.register()
            assert self._session is not None
            return self._session.node_jwt

    async def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {await self.token()}"),)

    async def _call_authed(self, call: Callable[[tuple[tuple[str, str], ...]], Awaitable[T]]) -> T:
        """Runs an authenticated RPC; on UNAUTHENTICATED registers again and retries once."""
        try:
            return await call(await self.metadata())
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAUTHENTICATED:
                raise
        self.invalidate()
        return await call(await self.metadata())

    async def get_config(self) -> nodes_pb2.GetNodeConfigResponse:
        return await self._call_authed(
            lambda md: self._stub.GetNodeConfig(
                nodes_pb2.GetNodeConfigRequest(), metadata=md, timeout=RPC_TIMEOUT_S
            )
        )

    async def ack_config(self, config_version: str, error: str = "") -> None:
        request = nodes_pb2.AckNodeConfigRequest(
            version=1,
            node_slug=self.config.node_slug,
            config_version=config_version,
            ack_at=_now_ts(),
            status="failed" if error else "applied",
            error=error,
        )
        await self._call_authed(
            lambda md: self._stub.AckNodeConfig(request, metadata=md, timeout=RPC_TIMEOUT_S)
        )

    async def report_capability(self) -> None:
        request = nodes_pb2.ReportCapabilityRequest(capability=self._capability())
        await self._call_authed(
            lambda md: self._stub.ReportCapability(request, metadata=md, timeout=RPC_TIMEOUT_S)
        )
