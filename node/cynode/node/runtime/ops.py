"""Small blocking Podman operations the hooks share (call them through a thread).

They go to the REST API where podman-py would get in the way: its `stop()` sets an HTTP
timeout of 1.5 x the stop timeout, shorter than a stop that has to escalate to SIGKILL.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from podman import PodmanClient
from podman.errors import NotFound

_API_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ExitState:
    exit_code: int
    oom_killed: bool


def stop_container(client: PodmanClient, container_id: str, timeout_s: int) -> None:
    """SIGTERM, then SIGKILL after timeout_s; quiet when already stopped or gone."""
    response = client.api.post(
        f"/containers/{container_id}/stop",
        params={"timeout": timeout_s, "ignore": True},
        timeout=timeout_s + _API_TIMEOUT_S,
    )
    if response.status_code in (304, 404):
        return
    response.raise_for_status()


def wait_container(client: PodmanClient, container_id: str) -> int:
    """Block until the container has stopped; its exit code."""
    response = client.api.post(
        f"/containers/{container_id}/wait", params={"condition": ["stopped", "exited"]}
    )
    response.raise_for_status()
    return int(response.json())


def exit_state(client: PodmanClient, container_id: str) -> ExitState:
    response = client.api.get(f"/containers/{container_id}/json", timeout=_API_TIMEOUT_S)
    response.raise_for_status()
    state: dict[str, Any] = response.json()["State"]
    return ExitState(int(state.get("ExitCode", -1)), bool(state.get("OOMKilled", False)))


def put_archive(
    client: PodmanClient, container_id: str, path: str, tar: bytes, attempts: int = 3
) -> None:
    """Unpack a tar into the container at path (podman-py's put_archive hides the error).

    Podman's copier can fail an upload with a spurious "broken pipe" (buildah issue
    6573); unpacking the same files again is harmless, so that one error is retried.
    """
    for attempt in range(1, attempts + 1):
        response = client.api.put(
            f"/containers/{container_id}/archive",
            params={"path": path},
            data=tar,
            timeout=_API_TIMEOUT_S,
        )
        if response.status_code == 500 and "broken pipe" in response.text and attempt < attempts:
            continue
        response.raise_for_status()
        return


def remove_container(client: PodmanClient, container_id: str) -> None:
    """Force-remove (kills if running) with its anonymous volumes; quiet when gone."""
    with contextlib.suppress(NotFound):
        client.containers.remove(container_id, force=True, v=True)


def remove_volume(client: PodmanClient, name: str) -> None:
    with contextlib.suppress(NotFound):
        client.volumes.remove(name, force=True)


def remove_pod(client: PodmanClient, pod_id: str) -> None:
    with contextlib.suppress(NotFound):
        client.pods.remove(pod_id, force=True)
