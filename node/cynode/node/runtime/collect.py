"""Collecting a job's artifacts: the regular files under /workspace/out/ (SPEC §4.11).

The files come out of the stopped container as the tar stream Podman's archive API
makes of /workspace/out (resolved inside the container, never on the host), read once,
front to back: each regular file is written into the artifact spool while its SHA-256
is taken. Symlinks, hard links, directories, devices and FIFOs are entries of that
stream, never followed, and skipped. Names are the paths relative to out/ and must be
safe (no empty, `.` or `..` part, no control character), else the file is skipped.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import shutil
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ulid import ULID

from cynode.jobs.v1 import job_pb2

CHUNK = 1 << 20
MAX_NAME_CHARS = 1024
DEFAULT_CONTENT_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int
    max_job_bytes: int


def safe_name(member_name: str) -> str | None:
    """The artifact name of a tar entry below `out/`, or None when it is not safe."""
    parts = member_name.split("/")
    if parts and parts[0] in (".", ""):
        parts = parts[1:]  # a leading ./ or /
    if len(parts) < 2 or parts[0] != "out":
        return None
    rest = parts[1:]
    if any(part in ("", ".", "..") for part in rest):
        return None
    name = "/".join(rest)
    if len(name) > MAX_NAME_CHARS or any(ord(c) < 32 or c in "\x7f\\" for c in name):
        return None
    return name


def content_type(name: str) -> str:
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed or DEFAULT_CONTENT_TYPE


def _copy(source: IO[bytes], target: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        while block := source.read(CHUNK):
            digest.update(block)
            out.write(block)
            size += len(block)
        out.flush()
        os.fsync(out.fileno())
    return size, digest.hexdigest()


class _Collector:
    """The set being built: the limits, in the order files come."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.found = job_pb2.ArtifactSet()
        self.total = 0

    def admits(self, name: str, size: int) -> bool:
        """Whether a file of `size` bytes still fits; marks the set truncated if not."""
        reason = ""
        if size > self.limits.max_file_bytes:
            reason = f"file over {self.limits.max_file_bytes} bytes: {name}"
        elif self.total + size > self.limits.max_job_bytes:
            reason = f"artifacts over {self.limits.max_job_bytes} bytes per job"
        if reason and not self.found.truncated:
            self.found.truncated, self.found.truncated_reason = True, reason
        return not reason

    def add(self, name: str, size: int, sha: str, artifact_id: str) -> None:
        self.total += size
        self.found.artifacts.append(
            job_pb2.Artifact(
                artifact_id=artifact_id,
                name=name,
                size_bytes=size,
                content_type=content_type(name),
                sha256=sha,
            )
        )


def collect_tar(stream: IO[bytes], into: Path, limits: Limits) -> job_pb2.ArtifactSet:
    """Reads the tar of out/ from `stream`, writing each kept file to `into/<artifact_id>`.

    Past a limit the file is left out and the set is marked truncated with the first
    reason; files after it that still fit are kept (the set is kept up to the limit).
    """
    collector = _Collector(limits)
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        for member in archive:
            if not member.isreg():
                continue  # directories, symlinks, hard links, devices, FIFOs
            name = safe_name(member.name)
            if name is None or not collector.admits(name, member.size):
                continue
            source = archive.extractfile(member)
            if source is None:  # pragma: no cover - isreg() entries always have data
                continue
            artifact_id = str(ULID())
            size, sha = _copy(source, into / artifact_id)
            collector.add(name, size, sha, artifact_id)
    return collector.found


def _hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def collect_dir(
    root: Path, into: Path, limits: Limits, *, copy: bool = False
) -> job_pb2.ArtifactSet:
    """The same from a directory holding a copy of out/ (what `debugfs rdump` made of a
    bounded workspace): each kept regular file is moved to `into/<artifact_id>`, or
    copied (`copy`: `root` is the stopped job's own out/, on another filesystem).
    Symlinks are never followed (the walk and each check use lstat); names sort so
    the set's order does not depend on the directory's."""
    collector = _Collector(limits)
    if root.is_symlink() or not root.is_dir():
        return collector.found
    for directory, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        for file_name in sorted(files):
            path = Path(directory) / file_name
            info = path.lstat()
            if not stat.S_ISREG(info.st_mode):
                continue
            name = safe_name("out/" + path.relative_to(root).as_posix())
            if name is None or not collector.admits(name, info.st_size):
                continue
            artifact_id = str(ULID())
            target = into / artifact_id
            if copy:
                shutil.copyfile(path, target, follow_symlinks=False)
            else:
                path.rename(target)
            collector.add(name, info.st_size, _hash(target), artifact_id)
    return collector.found
