"""Collecting a job's artifacts: the regular files under /workspace/out/ (SPEC §4.11).

The files come out of the stopped container as the tar stream Podman's archive API
makes of /workspace/out (resolved inside the container, never on the host), read once,
front to back: each regular file is written into the artifact spool while its SHA-256
is taken. Symlinks, hard links, directories, devices and FIFOs are entries of that
stream, never followed, and skipped. Names are the paths relative to out/ and must be
safe (no empty, `.` or `..` part, no control character), else the file is skipped.
"""

from __future__ import annotations

import errno
import hashlib
import mimetypes
import os
import stat
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol, cast

from ulid import ULID

from cynode.jobs.v1 import job_pb2

# Large reads: fewer system calls and hash updates per byte; one buffer, reused.
CHUNK = 4 << 20
SMALL_BUFFER = 64 << 10
MAX_NAME_CHARS = 1024
DEFAULT_CONTENT_TYPE = "application/octet-stream"


class ReadInto(Protocol):
    def readinto(self, buffer: memoryview, /) -> int | None: ...


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


def _copy(source: ReadInto, target: Path, expected: int, *, sync: bool = True) -> tuple[int, str]:
    """Copies `source` (of about `expected` bytes) into a new file `target`, hashing the
    bytes on the way: one pass, large reads into one buffer (no second read of the copy
    to hash it), no bigger than the file needs (a job's many small files)."""
    digest = hashlib.sha256()
    size = 0
    buffer = bytearray(min(CHUNK, max(expected, SMALL_BUFFER)))
    view = memoryview(buffer)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        while count := source.readinto(view):
            block = view[:count]
            digest.update(block)
            while block:
                block = block[os.write(fd, block) :]
            size += count
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
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
            size, sha = _copy(cast(ReadInto, source), into / artifact_id, member.size)
            collector.add(name, size, sha, artifact_id)
    return collector.found


def _hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


# A file at least this large is copied by the kernel in a thread of its own while this
# one hashes it: two passes over the page cache at once instead of one after the other.
PARALLEL_BYTES = 4 << 20


def _send_all(source: int, target: int, errors: list[BaseException]) -> None:
    """Copies `source` into `target` in the kernel (sendfile: no trip through Python's
    memory; copy_file_range refuses files on two filesystems), to the end of the file."""
    try:
        offset = 0
        while sent := os.sendfile(target, source, offset, 1 << 30):
            offset += sent
    except BaseException as exc:  # raised by the caller after the join
        errors.append(exc)


def _hash_fd(fd: int) -> tuple[int, str]:
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    size = 0
    while count := os.preadv(fd, [view], size):
        digest.update(view[:count])
        size += count
    return size, digest.hexdigest()


def _copy_file(path: Path, target: Path) -> tuple[int, str] | None:
    """A regular file of the stopped job's out/ into the spool with its size and SHA-256
    (one read each for the copy and the hash, at the same time for a large file); None
    when `path` is no longer a regular file (O_NOFOLLOW, O_NONBLOCK and fstat: what is
    opened is checked, not only what the walk's lstat saw)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None
        raise
    with os.fdopen(fd, "rb", buffering=0) as source:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        if info.st_size < PARALLEL_BYTES:
            return _copy(cast(ReadInto, source), target, info.st_size, sync=False)
        out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            errors: list[BaseException] = []
            copier = threading.Thread(target=_send_all, args=(fd, out, errors), daemon=True)
            copier.start()
            try:
                size, sha = _hash_fd(fd)
            finally:
                copier.join()
            if errors:
                raise errors[0]
            if os.fstat(out).st_size != size:  # the job has stopped: never expected
                raise OSError(f"{path.name} changed while it was collected")
        finally:
            os.close(out)
        return size, sha


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
                copied = _copy_file(path, target)
                if copied is None:
                    continue
                size, sha = copied
            else:
                path.rename(target)
                size, sha = info.st_size, _hash(target)
            collector.add(name, size, sha, artifact_id)
    return collector.found
