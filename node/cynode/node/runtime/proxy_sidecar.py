"""The inference pod's pieces as podman-py keyword arguments (pure).

The pod has a network namespace with loopback only (`netns: none`; its infra container
holds it), so the sandbox and the sidecar share 127.0.0.1 and nothing else. The sidecar
listens on 127.0.0.1:11434 and on a UDS in a per-job volume both containers mount; its
one way out is the node's relay socket, bind-mounted into the sidecar alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from cynode.jobs.v1 import job_pb2
from cynode.node.runtime.sandbox import SANDBOX_UID, STOP_TIMEOUT_S
from cynode.node.runtime.settings import InferencePodSettings
from cynode.node.runtime.userns import userns_spec
from cynode.proxy._host import files_limit

PROXY_PORT = 11434
# Where the shared volume with the proxy's socket appears in both containers.
SHARED_DIR = "/run/cynode-inference"
PROXY_SOCKET_NAME = "proxy.sock"
PROXY_SOCKET = f"{SHARED_DIR}/{PROXY_SOCKET_NAME}"
# Where the directory holding the node's relay socket appears in the sidecar.
UPSTREAM_DIR = "/run/cynode-upstream"
POD_HOSTNAME = "sandbox"


def inference_env(model: str, *, sandbox_tcp: bool = True) -> dict[str, str]:
    """What a sandbox in an inference pod is told (SPEC §4.6); never a credential.
    Without `sandbox_tcp` only the socket is offered, as upstream does."""
    env = {"INFERENCE_PROXY_URL": "http+unix://" + quote(PROXY_SOCKET, safe="")}
    if sandbox_tcp:
        env["OLLAMA_BASE_URL"] = env["OLLAMA_HOST"] = f"http://localhost:{PROXY_PORT}"
    if model:
        env["CYNODE_MODEL"] = model
    return env


def job_model(spec: job_pb2.JobSpec, settings: InferencePodSettings) -> str:
    return spec.model or settings.default_model


def pod_create_kwargs(labels: Mapping[str, str], userns: str = "auto") -> dict[str, Any]:
    """For `client.pods.create(name, **kwargs)`: labelled, loopback-only network, and
    (`userns` auto) a user namespace of its own its containers inherit (userns.py)."""
    return {
        "labels": dict(labels),
        "netns": {"nsmode": "none"},
        "hostname": POD_HOSTNAME,
        **userns_spec(userns),
    }


def sandbox_shared_volume(volume_name: str) -> dict[str, dict[str, Any]]:
    """The shared volume as the sandbox sees it: read-only, it only connects."""
    return {volume_name: {"bind": SHARED_DIR, "extended_mode": ["ro", "nodev", "nosuid", "noexec"]}}


def sidecar_create_kwargs(
    settings: InferencePodSettings,
    *,
    labels: Mapping[str, str],
    name: str,
    pod: str,
    shared_volume: str,
    relay_dir: str,
    relay_socket_name: str,
) -> dict[str, Any]:
    """For `client.containers.create(**kwargs)`: the proxy sidecar, locked down like a
    sandbox (non-root, no capabilities, read-only root, small limits). Nothing in it is
    the job's but its labels, so it can be made before the job is known (warm_pool.py)."""
    memory = settings.sidecar_memory_mb * 1024 * 1024
    tcp = ["--listen", f"127.0.0.1:{PROXY_PORT}"] if settings.sandbox_tcp else []
    command = [
        *tcp,
        "--listen",
        f"unix:{PROXY_SOCKET}",
        "--upstream",
        f"unix:{UPSTREAM_DIR}/{relay_socket_name}",
        "--timeout",
        f"{settings.proxy_timeout_s:g}",
        "--max-body-bytes",
        str(settings.max_body_bytes),
    ]
    return {
        **_jailed(settings.proxy_image, relay_dir, memory, pids=64),
        "command": command,
        "name": name,
        "pod": pod,
        "labels": dict(labels),
        "volumes": {
            shared_volume: {
                "bind": SHARED_DIR,
                "extended_mode": ["rw", "nodev", "nosuid", "noexec"],
            }
        },
    }


def _jailed(image: str, relay_dir: str, memory: int, pids: int) -> dict[str, Any]:
    """What the sidecar and the proxy host share: locked down like a sandbox (non-root,
    no capabilities, no new privileges, read-only root, small limits), with the relay's
    directory as their one way out."""
    return {
        "image": image,
        "user": f"{SANDBOX_UID}:{SANDBOX_UID}",
        "cap_drop": ["ALL"],
        "no_new_privileges": True,
        "read_only": True,
        "read_write_tmpfs": False,
        "mounts": [
            {"type": "tmpfs", "source": "tmpfs", "target": "/tmp", "size": str(16 * 1024 * 1024)},
            # The relay's directory, not its socket file: a relay restarted by the node
            # makes a new socket the running proxy then sees.
            {"type": "bind", "source": relay_dir, "target": UPSTREAM_DIR, "read_only": True},
        ],
        "mem_limit": memory,
        "memswap_limit": memory,
        "pids_limit": pids,
        # PID 1 without handlers ignores SIGTERM; an init makes stopping fast.
        "init": True,
        "stop_timeout": STOP_TIMEOUT_S,
        "log_config": {"Type": "k8s-file"},
    }


# The proxy host (inference/proxy_host.py): its own memory, and what each job's child
# adds (a forked copy of the host, ~5 MB of its own when idle; its buffers): a
# sidecar's 64 MB, what one job had before.
PROXY_HOST_BASE_MB = 64
PROXY_HOST_JOB_MB = 64
PROXY_HOST_JOB_PIDS = 4
# The proxy host's own open-files limit, at least (its control socket, the connections
# of jobs being handed over).
PROXY_HOST_FILES = 1024
PROXY_HOST_NPROC = 1024
# Where the proxy host's control directory appears in it.
CONTROL_DIR = "/run/cynode-control"


def proxy_host_create_kwargs(
    settings: InferencePodSettings,
    *,
    labels: Mapping[str, str],
    name: str,
    relay_dir: str,
    control_dir: str,
    jobs: int,
    control_socket_name: str,
) -> dict[str, Any]:
    """For `client.containers.create(**kwargs)`: the node's one proxy host, which serves
    every cold job's proxy in a child of its own (SPEC §4.6). The sidecar's jail, sized
    for `jobs` at once, with `--network none` (its children serve sockets the node made;
    the only connections it makes are to the relay's socket) and a user namespace as the
    node's other containers. Its control directory is given to its user (`U`): it makes
    its control socket there, which the node alone reaches."""
    memory = (PROXY_HOST_BASE_MB + PROXY_HOST_JOB_MB * jobs) * 1024 * 1024
    nofile = max(PROXY_HOST_FILES, files_limit(settings.job_max_connections))
    userns = userns_spec(settings.userns)
    own_ids = (
        {"userns_mode": userns["userns"], "idmappings": userns["idmappings"]} if userns else {}
    )
    return {
        **_jailed(settings.proxy_image, relay_dir, memory, pids=16 + PROXY_HOST_JOB_PIDS * jobs),
        "command": [
            "host",
            "--control",
            f"unix:{CONTROL_DIR}/{control_socket_name}",
            "--max-connections",
            str(settings.job_max_connections),
        ],
        "name": name,
        "labels": dict(labels),
        "network_mode": "none",
        # Each job's child sets its own open-files limit (files_limit); the container's
        # must allow it, whatever the engine's default (1024 here, lowered). Naming one
        # limit drops the engine's defaults for the others, and the stock process limit
        # cannot be set in a user namespace here: it is named too (pids_limit bounds
        # the processes anyway).
        "ulimits": [
            {"Name": "nofile", "Soft": nofile, "Hard": nofile},
            {"Name": "nproc", "Soft": PROXY_HOST_NPROC, "Hard": PROXY_HOST_NPROC},
        ],
        "volumes": {
            control_dir: {
                "bind": CONTROL_DIR,
                "extended_mode": ["rw", "U", "nodev", "nosuid", "noexec"],
            }
        },
        **own_ids,
    }


def shared_volume_options(userns: str = "auto") -> dict[str, str]:
    """The shared volume is owned by the sidecar's (and sandbox's) uid, so the proxy
    can create its socket in it. In a user namespace that uid is known only once the
    pod exists: then no owner is set, and Podman gives the new volume to the user of
    the first container that mounts it (the sidecar's, mapped)."""
    if userns == "auto":
        return {}
    return {"o": f"uid={SANDBOX_UID},gid={SANDBOX_UID}"}
