"""Maps the orchestrator's node config onto the sandbox settings the runner uses.

Zero or empty fields mean "keep the node default"; impossible values make the whole
config fail (acked as `failed` with the reason) and the previous settings stay.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from cynode.controlplane.v1 import nodes_pb2

from .runtime.settings import SandboxSettings

# The SPEC's request cap when the orchestrator sets none.
DEFAULT_MAX_REQUEST_BYTES = 10 * 1024 * 1024


class ConfigRejected(ValueError):
    pass


@dataclass(frozen=True)
class AppliedConfig:
    config_version: str
    settings: SandboxSettings
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    inference_enabled: bool = False
    inference_upstream: str = ""
    default_model: str = ""
    # The models the node may serve (SPEC §7.12); empty: all it has.
    allowed_models: tuple[str, ...] = ()


def apply_node_config(
    response: nodes_pb2.GetNodeConfigResponse, base: SandboxSettings
) -> AppliedConfig:
    sandbox = response.sandbox
    limits = sandbox.limits
    timeouts = sandbox.timeouts
    constraints = response.constraints
    for name, value in (
        ("sandbox.limits.memory_mb", limits.memory_mb),
        ("sandbox.limits.cpus", limits.cpus),
        ("sandbox.limits.pids", limits.pids),
        ("sandbox.timeouts.default_seconds", timeouts.default_seconds),
        ("sandbox.timeouts.max_seconds", timeouts.max_seconds),
        ("sandbox.max_output_bytes", sandbox.max_output_bytes),
        ("constraints.max_request_bytes", constraints.max_request_bytes),
        ("constraints.max_job_timeout_seconds", constraints.max_job_timeout_seconds),
    ):
        if value < 0:
            raise ConfigRejected(f"{name} is negative ({value})")
    if 0 < limits.memory_mb < 6:
        # Podman refuses containers under 6 MB; say so now rather than on every job.
        raise ConfigRejected(f"sandbox.limits.memory_mb={limits.memory_mb} is below 6")
    max_timeout = timeouts.max_seconds or base.max_timeout_s
    if constraints.max_job_timeout_seconds:
        # The runner only knows its settings, so the constraint is folded into the max.
        max_timeout = min(max_timeout, constraints.max_job_timeout_seconds)
    default_timeout = min(timeouts.default_seconds or base.default_timeout_s, max_timeout)
    settings = replace(
        base,
        image=sandbox.default_image or base.image,
        memory_mb=limits.memory_mb or base.memory_mb,
        cpus=limits.cpus or base.cpus,
        pids=limits.pids or base.pids,
        default_timeout_s=default_timeout,
        max_timeout_s=max_timeout,
        max_output_bytes=sandbox.max_output_bytes or base.max_output_bytes,
    )
    return AppliedConfig(
        config_version=response.config_version,
        settings=settings,
        max_request_bytes=constraints.max_request_bytes or DEFAULT_MAX_REQUEST_BYTES,
        inference_enabled=response.inference.enabled,
        inference_upstream=response.inference.upstream,
        default_model=response.inference.default_model,
        allowed_models=tuple(response.inference.allowed_models),
    )
