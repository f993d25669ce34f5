"""The node's side of NodeService: register with the PSK, hold the JWT, fetch and ack
config. The JWT is renewed by registering again (same node_slug = same node) when it
is about to expire or the server says UNAUTHENTICATED."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
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
# An assignment carries its task's inputs: up to 16 attachments of 10 MiB plus prompt,
# script and commands (SPEC §2), far over gRPC's 4 MiB default for a received message.
# The orchestrator admits up to 162 MiB a task; this leaves room for the message's own
# framing without making the node take anything of any size.
MAX_RECEIVE_BYTES = 192 * 1024 * 1024
CHANNEL_OPTIONS: list[tuple[str, int]] = [("grpc.max_receive_message_length", MAX_RECEIVE_BYTES)]


class TlsConfigError(ValueError):
    """The node's CA or client certificate files are unusable or do not match the pin."""


def ca_fingerprint(pem: bytes) -> str:
    """SHA-256 of the first certificate's DER form, `AB:CD:...` like `certs init` prints."""
    try:
        der = ssl.PEM_cert_to_DER_cert(pem.decode("ascii", "replace"))
    except ValueError as exc:
        raise TlsConfigError("orchestrator.ca_file holds no PEM certificate") from exc
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _normal_fingerprint(text: str) -> str:
    return text.upper().removeprefix("SHA256:").replace(":", "").replace(" ", "")


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc


def channel_credentials(config: NodeConfig) -> grpc.ChannelCredentials:
    """The CA the node pins (else the system store) and, for mTLS, its client pair."""
    roots = _read(config.ca_file, "orchestrator.ca_file") if config.ca_file else None
    if roots is not None and config.ca_fingerprint:
        actual = ca_fingerprint(roots)
        if _normal_fingerprint(actual) != _normal_fingerprint(config.ca_fingerprint):
            raise TlsConfigError(
                f"orchestrator.ca_file {config.ca_file} has fingerprint {actual}, "
                f"not the pinned {config.ca_fingerprint}"
            )
    key = _read(config.client_key, "orchestrator.client_key") if config.client_key else None
    chain = _read(config.client_cert, "orchestrator.client_cert") if config.client_cert else None
    return grpc.ssl_channel_credentials(
        root_certificates=roots, private_key=key, certificate_chain=chain
    )


def make_channel(config: NodeConfig, target: str | None = None) -> grpc.aio.Channel:
    target = target or config.grpc_target
    if not config.uses_tls:
        return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
    return grpc.aio.secure_channel(target, channel_credentials(config), options=CHANNEL_OPTIONS)


_TLS_MARKERS = (
    "handshake",
    "ssl",
    "certificate",
    "tls",
    "socket closed",
    "connection reset",
    "wrong_version",
)


def tls_hint(config: NodeConfig, details: str) -> str:
    """A sentence saying what to check when a connection fails in a way TLS explains
    (wrong CA, refused client certificate, plain text against TLS or the reverse)."""
    lowered = details.lower()
    if not any(marker in lowered for marker in _TLS_MARKERS):
        return ""
    if not config.uses_tls:
        return (
            f"TLS: the node speaks plain text to {config.grpc_target}; if the orchestrator "
            "serves TLS, use an https:// orchestrator.url and orchestrator.ca_file"
        )
    mtls = " and client certificate (orchestrator.client_cert)" if config.client_cert else ""
    return (
        f"TLS handshake with the control plane at {config.grpc_target} failed: check "
        f"orchestrator.ca_file ({config.ca_file or 'system store'}){mtls}, and that the "
        "orchestrator serves TLS and (for mTLS) trusts this node's certificate"
    )


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
