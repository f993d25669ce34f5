"""Sandbox limits and the effective-timeout rule (SPEC §4)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PROXY_IMAGE = "localhost/cynode-proxy"


@dataclass(frozen=True)
class InferencePodSettings:
    """How the node runs a job that needs inference: in a warm pod with the proxy
    sidecar, or alone with its proxy in the node's proxy host (cold; SPEC §4.6).

    `relay_socket` is the host path of the node's inference relay (a UDS); it is
    bind-mounted into the sidecar alone. `proxy_timeout_s` is the sidecar's wait for a
    response head (504 beyond it). `default_model` goes to prompt jobs that name none
    (empty: the runner in the sandbox takes the first model the proxy lists).
    """

    relay_socket: str
    proxy_image: str = DEFAULT_PROXY_IMAGE
    proxy_timeout_s: float = 120.0
    max_body_bytes: int = 10 * 1024 * 1024
    default_model: str = ""
    sidecar_memory_mb: int = 64
    ready_timeout_s: float = 30.0
    # False: the sandbox is offered the proxy's socket alone (INFERENCE_PROXY_URL), and
    # the sidecar listens on no TCP port (upstream's form).
    sandbox_tcp: bool = True
    # The pod's user namespace (userns.py): "auto", one of its own; "host": none.
    userns: str = "auto"
    # The control socket of the node's proxy host, which serves cold jobs' proxies
    # (job_proxy.py); empty: beside the relay's directory.
    proxy_host_socket: str = ""
    # A cold job's open connections to its proxy (its child's open-files limit).
    job_max_connections: int = 64
    # Where a cold job's socket directory is made; empty: beside the relay's directory.
    job_socket_dir: str = ""


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
    # None: this node runs no inference jobs (prompt and use_inference jobs fail).
    inference: InferencePodSettings | None = None
    # /workspace's bound in MiB and where its images live (SPEC §4.4); 0 or no dir:
    # a plain volume, bounded only by the node's disk.
    workspace_mb: int = 0
    workspace_dir: str = ""
    # The artifact spool (SPEC §4.11); empty: artifacts are not collected.
    artifact_dir: str = ""
    artifact_max_file_bytes: int = 256 * 1024 * 1024
    artifact_max_job_bytes: int = 1024 * 1024 * 1024
    # "auto": each sandbox in a user namespace of its own (userns.py); "host": none.
    userns: str = "auto"


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
