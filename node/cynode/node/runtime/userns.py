"""Every sandbox in its own user namespace (SPEC §4.4).

With `sandbox.userns: auto` Podman gives each sandbox container (or inference pod, whose
members inherit it) a range of 65536 host ids of its own, taken from the `containers`
user's range in /etc/subuid and /etc/subgid: the sandbox user (10000) is a high,
unprivileged host uid that owns nothing outside the sandbox. `host` turns it off.

Podman 4.3 runs the conmon of a container whose ids do not include the caller's in a
mount namespace of its own, and the cleanup conmon starts when the container exits runs
there too: the container's `userdata/shm` and its loop-mounted workspace volume stay
mounted in the host's namespace, and removing them then fails with "device or resource
busy". `release` unmounts such leftovers from the node's (the host's) namespace; ops.py
calls it before a removal and the artifacts hook before it reads the workspace image.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

USERNS_MODES = ("auto", "host")
SUBID_USER = "containers"
# One sandbox's ids: 0-65535 inside, so every uid an image may use is mapped.
RANGE_SIZE = 65536
SUBID_FILES = (Path("/etc/subuid"), Path("/etc/subgid"))
MOUNTINFO = Path("/proc/self/mountinfo")


def userns_spec(mode: str) -> dict[str, Any]:
    """The specgen fields for a container or a pod in `mode`; empty: the host's ids.

    Podman 4.3's REST API ignores `userns: auto` alone (the CLI fills in the id
    mappings itself): the automatic mapping is asked for in `idmappings`."""
    if mode != "auto":
        return {}
    return {
        "userns": {"nsmode": "auto"},
        "idmappings": {"AutoUserNs": True, "AutoUserNsOpts": {"Size": RANGE_SIZE}},
    }


def subid_count(path: Path, user: str = SUBID_USER) -> int:
    """How many subordinate ids `user` has in `path` (an /etc/subuid-style file)."""
    try:
        text = path.read_text()
    except OSError:
        return 0
    total = 0
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[0] == user and parts[1].isdigit() and parts[2].isdigit():
            total += int(parts[2])
    return total


def missing_ranges(files: tuple[Path, ...] | None = None) -> list[str]:
    """The files (default SUBID_FILES) that give the `containers` user fewer ids than
    one sandbox needs."""
    return [str(path) for path in files or SUBID_FILES if subid_count(path) < RANGE_SIZE]


FIX = (
    f"echo {SUBID_USER}:2147483647:2147483648 | tee -a /etc/subuid /etc/subgid "
    "(tools/system-deps.sh does it), or set sandbox.userns: host"
)


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes.
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mount_points(mountinfo: Path = MOUNTINFO) -> set[str]:
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return set()
    return {_unescape(line.split()[4]) for line in lines if len(line.split()) > 4}


def release(paths: list[str], mountinfo: Path = MOUNTINFO) -> list[str]:
    """Unmounts each of `paths` that is a mount point in this namespace (blocking); the
    ones it unmounted. A path that cannot be unmounted is left for the removal to report."""
    mounted = mount_points(mountinfo)
    released = []
    for path in paths:
        if path and path in mounted:
            # Lazily when busy: nothing of the stopped sandbox may use it any more.
            for command in (["umount", path], ["umount", "-l", path]):
                done = subprocess.run(
                    command, capture_output=True, text=True, check=False, timeout=30
                )
                if done.returncode == 0:
                    released.append(path)
                    break
    return released
