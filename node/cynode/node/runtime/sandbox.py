"""The sandbox rules as podman-py `containers.create` keyword arguments (pure).

Checked against podman-py 5.x talking to Podman 4.3 (`_render_payload`):
- `nano_cpus` is silently dropped by podman-py, so CPU is limited with
  `cpu_period`/`cpu_quota` instead;
- `tmpfs=` is refused by podman-py, so /tmp is a `mounts` entry of type tmpfs;
- `security_opt` is sent as SELinux options, so no-new-privileges is the specgen field
  `no_new_privileges=True` (inspect then shows SecurityOpt ["no-new-privileges"]).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from cynode.jobs.v1 import job_pb2
from cynode.node.runtime.labels import job_labels
from cynode.node.runtime.settings import SandboxSettings
from cynode.node.runtime.userns import userns_spec

SANDBOX_UID = 10000
WORKSPACE = "/workspace"
# Seconds between SIGTERM and SIGKILL when the node stops a sandbox (timeout, cancel).
STOP_TIMEOUT_S = 1
CPU_PERIOD_US = 100_000
_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]+")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def object_name(kind: str, spec: job_pb2.JobSpec, suffix: str) -> str:
    """A readable, podman-safe name: cynode-<kind>-<job id>-<attempt>-<suffix>."""
    job = _NAME_UNSAFE.sub("-", spec.job_id)[:64].strip("-.") or "job"
    return f"cynode-{kind}-{job}-{spec.attempt}-{suffix}"


def sandbox_env(spec: job_pb2.JobSpec) -> dict[str, str]:
    """The job's env plus CYNODE_TASK_ID/CYNODE_JOB_ID (ours win).

    Names that are not shell identifiers and values with NUL are dropped: the shell
    could not use them and Podman would refuse the container.
    """
    env = {k: v for k, v in spec.env.items() if _ENV_KEY.match(k) and "\x00" not in v}
    env["CYNODE_TASK_ID"] = spec.task_id
    env["CYNODE_JOB_ID"] = spec.job_id
    return env


def build_create_kwargs(
    spec: job_pb2.JobSpec,
    settings: SandboxSettings,
    *,
    command: list[str],
    name: str,
    volume_name: str,
    pod: str | None = None,
    extra_env: Mapping[str, str] | None = None,
    extra_volumes: Mapping[str, dict[str, Any]] | None = None,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Everything for `client.containers.create(**kwargs)` for one sandbox container.

    With `pod`, the container joins that pod's network namespace (loopback only, see
    pod_hook.py) instead of getting none of its own, and the pod sets the hostname.
    `extra_env` (ours) wins over the job's env; `extra_volumes` are added to /workspace.
    `labels` replace the job's (a warm sandbox is made before any job).
    """
    memory = settings.memory_mb * 1024 * 1024
    env = sandbox_env(spec)
    env.update(extra_env or {})
    volumes: dict[str, dict[str, Any]] = {
        volume_name: {"bind": WORKSPACE, "extended_mode": ["rw", "nodev", "nosuid"]}
    }
    volumes.update(extra_volumes or {})
    kwargs: dict[str, Any] = {
        "image": spec.image or settings.image,
        "command": command,
        "name": name,
        "labels": dict(labels) if labels is not None else job_labels(spec, settings.node_id),
        "environment": env,
        "user": f"{SANDBOX_UID}:{SANDBOX_UID}",
        "working_dir": WORKSPACE,
        "network_mode": "none",
        "cap_drop": ["ALL"],
        "no_new_privileges": True,
        "read_only": True,
        # Podman would otherwise add writable tmpfs on /run, /var/tmp...: only /tmp is wanted.
        "read_write_tmpfs": False,
        "mounts": [
            # tmpfs pages count against the memory limit, so the limit also caps /tmp.
            {"type": "tmpfs", "source": "tmpfs", "target": "/tmp", "size": f"{memory}"}
        ],
        "volumes": volumes,
        "mem_limit": memory,
        # No swap on top of the memory limit: a job over it is OOM-killed, not slowed.
        "memswap_limit": memory,
        "cpu_period": CPU_PERIOD_US,
        "cpu_quota": max(int(settings.cpus * CPU_PERIOD_US), 1000),
        "pids_limit": settings.pids,
        # An init as PID 1 forwards SIGTERM (a shell as PID 1 ignores it) and reaps zombies.
        "init": True,
        "stop_timeout": STOP_TIMEOUT_S,
        "log_config": {"Type": "k8s-file"},
        "hostname": "sandbox",
    }
    if pod is not None:
        # Podman refuses these for a container that shares the pod's namespaces; the
        # pod's user namespace is its members' (proxy_sidecar.pod_create_kwargs).
        del kwargs["network_mode"], kwargs["hostname"]
        kwargs["pod"] = pod
    else:
        userns = userns_spec(settings.userns)
        if userns:
            kwargs["userns_mode"] = userns["userns"]
            kwargs["idmappings"] = userns["idmappings"]
    return kwargs


def warm_create_kwargs(
    settings: SandboxSettings,
    *,
    command: list[str],
    name: str,
    volume_name: str,
    labels: Mapping[str, str],
) -> dict[str, Any]:
    """A warm sandbox container (SPEC §4.10): every rule of `build_create_kwargs`, no job
    env (the job's arrives with the handoff) and stdin kept open for the handoff."""
    kwargs = build_create_kwargs(
        job_pb2.JobSpec(),
        settings,
        command=command,
        name=name,
        volume_name=volume_name,
        labels=labels,
    )
    kwargs["environment"] = {}
    kwargs["stdin_open"] = True
    return kwargs
