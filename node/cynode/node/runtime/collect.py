"""Collecting a job's artifacts: the regular files under /workspace/out/ (SPEC §4.10).

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


def collect_tar(stream: IO[bytes], into: Path, limits: Limits) -> job_pb2.ArtifactSet:
    """Reads the tar of out/ from `stream`, writing each kept file to `into/<artifact_id>`.

    Past a limit the file is left out and the set is marked truncated with the first
    reason; files after it that still fit are kept (the set is kept up to the limit).
    """
    found = job_pb2.ArtifactSet()
    total = 0

    def cut(reason: str) -> None:
        if not found.truncated:
            found.truncated, found.truncated_reason = True, reason

    with tarfile.open(fileobj=stream, mode="r|") as archive:
        for member in archive:
            if not member.isreg():
                continue  # directories, symlinks, hard links, devices, FIFOs
            name = safe_name(member.name)
            if name is None:
                continue
            if member.size > limits.max_file_bytes:
                cut(f"file over {limits.max_file_bytes} bytes: {name}")
                continue
            if total + member.size > limits.max_job_bytes:
                cut(f"artifacts over {limits.max_job_bytes} bytes per job")
                continue
            source = archive.extractfile(member)
            if source is None:  # pragma: no cover - isreg() entries always have data
                continue
            artifact_id = str(ULID())
            size, sha = _copy(source, into / artifact_id)
            total += size
            found.artifacts.append(
                job_pb2.Artifact(
                    artifact_id=artifact_id,
                    name=name,
                    size_bytes=size,
                    content_type=content_type(name),
                    sha256=sha,
                )
            )
    return found
