"""A bounded /workspace: an ext4 filesystem in a sparse file of `workspace_mb`, loop-
mounted by Podman's local volume driver when the container starts (SPEC §4.4).

A job that writes past it gets ENOSPC from its own filesystem, while the node's disk,
its spool and every other job's workspace are untouched: the bound is enforced by the
kernel, not by anything the job could race. The file is sparse, so only what the job
writes takes disk space. `lost+found` is removed so /workspace starts empty, and the
root of the filesystem belongs to the sandbox user. Blocking: call it in a thread.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from cynode.node.runtime.sandbox import SANDBOX_UID

MKFS = "mkfs.ext4"
# After its volume is removed, how long the node waits for a loop device to go.
RELEASE_WAIT_S = 5.0
DEBUGFS = "debugfs"


class WorkspaceImageError(RuntimeError):
    pass


def tools_present() -> list[str]:
    """The tools a bounded workspace needs that this host lacks (e2fsprogs)."""
    return [tool for tool in (MKFS, DEBUGFS) if shutil.which(tool) is None]


def make_image(path: Path, size_mb: int) -> None:
    """A fresh, empty ext4 image of `size_mb` MiB at `path`, owned by the sandbox user."""
    path.unlink(missing_ok=True)
    with path.open("wb") as image:
        image.truncate(size_mb * 1024 * 1024)
    options = f"root_owner={SANDBOX_UID}:{SANDBOX_UID},lazy_itable_init=1,lazy_journal_init=1"
    commands = (
        # -m 0: no blocks reserved for root (the job is never root); -q: no banner.
        [MKFS, "-q", "-F", "-m", "0", "-E", options, str(path)],
        [DEBUGFS, "-w", "-R", "rmdir lost+found", str(path)],
    )
    for command in commands:
        try:
            done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            path.unlink(missing_ok=True)
            raise WorkspaceImageError(f"{command[0]}: {exc}") from exc
        if done.returncode != 0:
            path.unlink(missing_ok=True)
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise WorkspaceImageError(
                f"{command[0]} failed: {detail[-1] if detail else done.returncode}"
            )


def image_path(workspace_mb: int, workspace_dir: str, volume_name: str) -> Path | None:
    """Where a job's workspace image lives; None when workspaces are not bounded."""
    if workspace_mb <= 0 or not workspace_dir:
        return None
    return Path(workspace_dir) / f"{volume_name}.img"


def volume_options(path: Path) -> dict[str, str]:
    """podman-py `volumes.create(driver_opts=...)` for a loop mount of the image.

    `nobarrier`: the workspace never has to survive a crash (a node that starts removes
    every image it finds), and with barriers the unmount after the job flushes each
    byte the job wrote through the loop device to the disk (an fsync of the image)
    before the node may collect out/: about 0.25 s of the 128 MiB artifact bench."""
    return {"type": "ext4", "device": str(path), "o": "loop,nodev,nosuid,nobarrier"}


def remove_images(directory: Path) -> int:
    """At node start: images of jobs a dead node left (their volumes are gone too)."""
    gone = 0
    if directory.is_dir():
        for image in directory.glob("*.img"):
            image.unlink(missing_ok=True)
            gone += 1
    return gone


def _attached(image: Path) -> bool:
    listed = subprocess.run(
        ["losetup", "-j", str(image)], capture_output=True, text=True, check=False, timeout=10
    )
    return bool(listed.stdout.strip())


def wait_unmounted(image: Path, timeout_s: float = 30.0) -> bool:
    """Until no loop device holds the image (Podman's cleanup unmounted the volume after
    the container stopped, so every write the job made is in the file); False when it
    still is after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while _attached(image):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def dump_dir(image: Path, path: str, into: Path) -> Path | None:
    """A copy of the image's `path` (a directory, read by debugfs: no mount, nothing
    followed) under `into`; None when the image has no directory there."""
    done = subprocess.run(
        [DEBUGFS, "-R", f"rdump {path} {into}", str(image)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    copied = into / Path(path).name
    if done.returncode != 0:
        raise WorkspaceImageError(f"{DEBUGFS} rdump failed: {done.stderr.strip()[-200:]}")
    if copied.is_symlink() or not copied.is_dir():
        return None
    return copied
