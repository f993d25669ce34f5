"""What the control plane needs to know; the orchestrator's Settings map onto this."""

from __future__ import annotations

from dataclasses import dataclass, field

from cynode.orchestrator.store import new_id

MIB = 1024 * 1024


@dataclass(frozen=True)
class ControlPlaneSettings:
    psk: str
    jwt_secret: str
    # Where nodes reach us; copied into the registration bootstrap payload.
    base_url: str = "http://127.0.0.1:12082"
    grpc_endpoint: str = "127.0.0.1:12083"
    rest_endpoint: str = "127.0.0.1:12082"
    node_jwt_ttl_seconds: int = 24 * 3600
    lease_seconds: int = 30
    heartbeat_seconds: int = 10
    max_attempts: int = 3
    # How often the scheduler sweeps for expired leases and missed wake-ups.
    sweep_seconds: float = 5.0
    # A node whose last heartbeat is older than this many heartbeats counts as offline.
    stale_heartbeats: int = 3
    claim_batch: int = 512
    replica_id: str = field(default_factory=new_id)
    notify_channel: str = "cynode_jobs"
    sandbox_image: str = "localhost/cynode-sandbox"
    default_timeout_seconds: int = 3600
    max_timeout_seconds: int = 10800
    memory_mb: int = 1024
    cpus: float = 1.0
    pids: int = 256
    max_output_bytes: int = 262144
    max_request_bytes: int = 10 * MIB
    inference_enabled: bool = True
    inference_upstream: str = "http://127.0.0.1:11434"
    allowed_models: tuple[str, ...] = ()
    default_model: str = ""

    @property
    def stale_after_seconds(self) -> float:
        return float(self.heartbeat_seconds * self.stale_heartbeats)
