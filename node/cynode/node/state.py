"""The node's private state directory: 0700, every file in it 0600.

It holds the node JWT (so `doctor` and a restart can see it) and the result spool.
Writes are atomic (temp file, fsync, rename, fsync the directory) so a crash leaves
either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600
# sun_path holds 108 bytes with its NUL: the longest path a socket can be bound at.
MAX_SOCKET_PATH = 107


class StateDirError(RuntimeError):
    pass


def ensure_private_dir(path: Path) -> Path:
    """Creates the directory 0700, or tightens it, and refuses one we do not own."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid != os.geteuid():
        raise StateDirError(f"{path} is owned by uid {info.st_uid}, not by this user")
    if stat.S_IMODE(info.st_mode) != DIR_MODE:
        path.chmod(DIR_MODE)
    return path


def socket_dir(preferred: Path, longest: str, prefix: str) -> Path:
    """`preferred`, or a short directory in the temporary directory when
    `preferred/longest` (the longest socket path to be made under it) would not fit in
    a socket address.

    The short one is named after `preferred`, so a restarted node finds the one it used
    before (its sockets are bound again over the stale ones, as in `preferred`) rather
    than leaving one more behind each start. One that is not a directory of this user
    that no one else may write (someone else made the name first, or a link sits
    there) is not used: a new unique one is made instead."""
    if len(str(preferred / longest)) <= MAX_SOCKET_PATH:
        return preferred
    digest = hashlib.sha256(str(preferred).encode()).hexdigest()[:16]
    named = Path(tempfile.gettempdir()) / f"{prefix}{digest}"
    try:
        with contextlib.suppress(FileExistsError):
            named.mkdir(mode=DIR_MODE)
        info = named.lstat()
    except OSError:
        info = None
    # Entered by others it may be (the relay's is 0711), written by none but this user.
    if (
        info is not None
        and stat.S_ISDIR(info.st_mode)
        and info.st_uid == os.geteuid()
        and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    ):
        return named
    return Path(tempfile.mkdtemp(prefix=prefix))


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@dataclass(frozen=True)
class NodeSessionState:
    node_jwt: str
    expires_at: datetime
    node_id: str

    def expires_within(self, margin: timedelta, now: datetime | None = None) -> bool:
        return (now or datetime.now(UTC)) + margin >= self.expires_at


class StateDir:
    def __init__(self, root: Path) -> None:
        self.root = root

    def prepare(self) -> None:
        ensure_private_dir(self.root)
        ensure_private_dir(self.spool_dir)
        ensure_private_dir(self.artifact_dir)
        ensure_private_dir(self.workspace_dir)

    @property
    def spool_dir(self) -> Path:
        return self.root / "spool"

    @property
    def workspace_dir(self) -> Path:
        # The jobs' bounded /workspace images (SPEC §4.4).
        return self.root / "workspaces"

    @property
    def artifact_dir(self) -> Path:
        # Collected artifacts until the orchestrator stores them (SPEC §4.11).
        return self.root / "artifacts"

    @property
    def session_file(self) -> Path:
        return self.root / "session.json"

    def save_session(self, session: NodeSessionState) -> None:
        body = {
            "node_jwt": session.node_jwt,
            "expires_at": session.expires_at.isoformat(),
            "node_id": session.node_id,
        }
        atomic_write(self.session_file, json.dumps(body).encode())

    def load_session(self) -> NodeSessionState | None:
        try:
            body = json.loads(self.session_file.read_bytes())
            return NodeSessionState(
                node_jwt=str(body["node_jwt"]),
                expires_at=datetime.fromisoformat(body["expires_at"]),
                node_id=str(body.get("node_id", "")),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None
