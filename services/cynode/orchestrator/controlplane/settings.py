"""What the control plane needs to know: the options an operator tunes
(`config.ControlPlaneOptions`: leases, scheduling, the node config it issues) plus what
the orchestrator derives from its own settings (secrets, the endpoints nodes reach)."""

from __future__ import annotations

from dataclasses import dataclass, field

from cynode.orchestrator.config import ControlPlaneOptions
from cynode.orchestrator.store import new_id


@dataclass(frozen=True, kw_only=True)
class ControlPlaneSettings(ControlPlaneOptions):
    psk: str
    jwt_secret: str
    # Where nodes reach us; copied into the registration bootstrap payload.
    base_url: str = "http://127.0.0.1:12082"
    grpc_endpoint: str = "127.0.0.1:12083"
    rest_endpoint: str = "127.0.0.1:12082"
    # How often the scheduler sweeps for expired leases and missed wake-ups.
    sweep_seconds: float = 5.0
    replica_id: str = field(default_factory=new_id)
    # Artifacts of sets recorded longer ago than this are removed (0: kept for ever).
    artifacts_ttl_seconds: int = 0
    # Calls forwarded to another replica's gateway gRPC port (SPEC §10.3) use TLS when
    # this replica's listeners do, checked against `forward_root_ca` (None: system roots).
    forward_tls: bool = False
    forward_root_ca: bytes | None = None

    @property
    def stale_after_seconds(self) -> float:
        return float(self.heartbeat_seconds * self.stale_heartbeats)
