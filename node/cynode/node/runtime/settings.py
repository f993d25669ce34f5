"""Sandbox limits and the effective-timeout rule (SPEC §4)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SandboxSettings:
    """What the node applies to every sandbox container.

    `max_timeout_s` is the node's ceiling; fold the orchestrator's
    `constraints.max_job_timeout_seconds` into it (see `effective_timeout`) when the
    config arrives, so the runner needs only these settings.
    """

    image: str = "localhost/cynode-sandbox"
    memory_mb: int = 512
    cpus: float = 1.0
    pids: int = 128
    default_timeout_s: int = 3600
    max_timeout_s: int = 10800
    max_output_bytes: int = 262144
    node_id: str = ""


def effective_timeout(
    spec_timeout: int, settings: SandboxSettings, constraint_max: int | None = None
) -> int:
    """min(the job's timeout or the node default, the node max, the config constraint).

    A zero or negative job timeout means "the node default"; a missing or non-positive
    constraint means "no constraint". Never less than one second.
    """
    wanted = spec_timeout if spec_timeout > 0 else settings.default_timeout_s
    limit = min(wanted, settings.max_timeout_s)
    if constraint_max is not None and constraint_max > 0:
        limit = min(limit, constraint_max)
    return max(limit, 1)
