"""Small blocking Podman operations the hooks share (call them through a thread).

They go to the REST API where podman-py would get in the way: its `stop()` sets an HTTP
timeout of 1.5 x the stop timeout, shorter than a stop that has to escalate to SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from podman import PodmanClient
from podman.errors import APIError, NotFound

from cynode.node.runtime import userns

_API_TIMEOUT_S = 60.0
# For calls that last as long as the job (wait, attach): a connect timeout but no read
# timeout, whatever the client's default (the node's is 60 s, shorter than many jobs).
JOB_LONG_TIMEOUT = (_API_TIMEOUT_S, None)
# States in which Podman has read the container's exit file (exit code, OOM) already.
_ENDED_STATES = ("stopped", "exited")


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


def start_container(client: PodmanClient, container_id: str) -> None:
    """Start a created container (one call: podman-py's `get` + `start` make two)."""
    response = client.api.post(f"/containers/{container_id}/start", timeout=_API_TIMEOUT_S)
    if response.status_code == 304:  # already running
        return
    response.raise_for_status()


def wait_container(client: PodmanClient, container_id: str) -> int:
    """Block until the container has stopped; its exit code.

    Podman 4.3 polls for this every 250 ms and, in practice, answers only once the
    container's cleanup has run, so the runner prefers `ended_state` when it can.
    """
    response = client.api.post(
        f"/containers/{container_id}/wait",
        params={"condition": ["stopped", "exited"]},
        timeout=JOB_LONG_TIMEOUT,
    )
    response.raise_for_status()
    return int(response.json())


def container_state(client: PodmanClient, container_id: str) -> dict[str, Any]:
    response = client.api.get(f"/containers/{container_id}/json", timeout=_API_TIMEOUT_S)
    response.raise_for_status()
    state: dict[str, Any] = response.json()["State"]
    return state


def log_tail(client: PodmanClient, container_id: str, limit: int = 2000) -> str:
    """The last `limit` bytes of a container's stdout and stderr, for an operator's log
    line; "(no log: …)" when Podman cannot give them."""
    try:
        response = client.api.get(
            f"/containers/{container_id}/logs",
            params={"stdout": True, "stderr": True},
            timeout=_API_TIMEOUT_S,
        )
        tail: bytes = response.content[-limit:]
    except Exception as exc:  # only for the operator's log
        return f"(no log: {exc})"
    return tail.decode(errors="replace")


def container_pid(client: PodmanClient, container_id: str) -> int:
    """The host pid of an initialised or running container's process (its namespaces'
    holder); RuntimeError when it has none (not initialised, or already stopped)."""
    pid = int(container_state(client, container_id).get("Pid", 0))
    if pid <= 0:
        raise RuntimeError(f"container {container_id[:12]} has no process")
    return pid


def exit_state(client: PodmanClient, container_id: str) -> ExitState:
    state = container_state(client, container_id)
    return ExitState(int(state.get("ExitCode", -1)), bool(state.get("OOMKilled", False)))


def ended_state(
    client: PodmanClient, container_id: str, tries: int = 20, pause_s: float = 0.005
) -> ExitState | None:
    """The exit state once Podman has recorded the container's exit, asking up to
    `tries` times `pause_s` apart; None if it still has not (then use wait_container).
    """
    for attempt in range(tries):
        state = container_state(client, container_id)
        if str(state.get("Status", "")) in _ENDED_STATES:
            return ExitState(int(state.get("ExitCode", -1)), bool(state.get("OOMKilled", False)))
        if attempt + 1 < tries:
            time.sleep(pause_s)
    return None


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


def _stopped_shm(client: PodmanClient, container_id: str) -> tuple[str, bool]:
    """The container's shm mount point (empty when gone) and whether it has stopped."""
    response = client.api.get(f"/containers/{container_id}/json", timeout=_API_TIMEOUT_S)
    if response.status_code != 200:
        return "", False
    info = response.json()
    static_dir = str(info.get("StaticDir") or "")
    stopped = str(info.get("State", {}).get("Status", "")) in _ENDED_STATES
    return (f"{static_dir}/shm" if static_dir else ""), stopped


def remove_container(client: PodmanClient, container_id: str) -> None:
    """Force-remove (kills if running) with its anonymous volumes; quiet when gone.

    A user-namespaced container's shm can still be mounted here after it stopped
    (userns.py): released first when the container has stopped, and after a removal
    that failed on it, then removed again.
    """
    shm, stopped = _stopped_shm(client, container_id)
    if shm and stopped:
        userns.release([shm])
    _retry_busy(lambda: client.containers.remove(container_id, force=True, v=True), [shm])


def _retry_busy(remove: Callable[[], object], shms: list[str], attempts: int = 3) -> None:
    """A removal that failed on a shm left mounted (userns.py): release, try again."""
    for attempt in range(1, attempts + 1):
        try:
            with contextlib.suppress(NotFound):
                remove()
            return
        except APIError as exc:
            if "resource busy" not in str(exc) or attempt == attempts:
                raise
            userns.release([s for s in shms if s])
            time.sleep(0.1 * attempt)


def volume_mountpoint(client: PodmanClient, name: str) -> str:
    """Where Podman mounts the volume; empty when it is gone."""
    try:
        return str(client.volumes.get(name).attrs.get("Mountpoint") or "")
    except NotFound:
        return ""


def mounted_volume(client: PodmanClient, name: str) -> str:
    """The volume's mount point when it is mounted here (by a user-namespaced container
    that stopped, see userns.py); empty otherwise."""
    mountpoint = volume_mountpoint(client, name)
    return mountpoint if mountpoint and mountpoint in userns.mount_points() else ""


def release_volume(client: PodmanClient, name: str) -> list[str]:
    """Unmounts the volume here if its container left it mounted (userns.py): call it
    only once no container that uses it runs."""
    return userns.release([volume_mountpoint(client, name)])


def remove_volume(client: PodmanClient, name: str) -> None:
    release_volume(client, name)
    with contextlib.suppress(NotFound):
        client.volumes.remove(name, force=True)


def remove_pod(client: PodmanClient, pod_id: str) -> None:
    """Kill, then force-remove the pod and its containers; quiet when gone.

    The SIGKILL first: a forced removal stops each running container gracefully, one
    after the other (about 100 ms more here), and nothing in a finished job's pod has
    anything left to save.
    """
    # Best effort: a pod with nothing running answers 409, a gone one 404.
    client.api.post(f"/pods/{pod_id}/kill", params={"signal": "SIGKILL"}, timeout=_API_TIMEOUT_S)
    members = client.api.get(
        "/containers/json",
        params={"all": True, "filters": json.dumps({"pod": [pod_id]})},
        timeout=_API_TIMEOUT_S,
    )
    ids = [str(c["Id"]) for c in members.json()] if members.status_code == 200 else []
    shms = [_stopped_shm(client, cid)[0] for cid in ids]
    _retry_busy(lambda: client.pods.remove(pod_id, force=True), shms)
