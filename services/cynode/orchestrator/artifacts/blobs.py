"""Content-addressed blobs: an artifact's bytes, stored once under their SHA-256.

`BlobStore` is the small interface the rest of the orchestrator uses; `FsBlobStore`
keeps blobs in a directory (by default `<data_dir>/artifacts`):

    blobs/<first two hex digits>/<sha256>      complete, checked, never rewritten
    incoming/<upload key>.part                 an upload in progress (resumable)

A blob appears only by `rename` of a checked `.part` (atomic on one filesystem), so a
reader never sees a half-written blob, and a crash mid-upload leaves only a `.part`
whose size says where the upload resumes. Several replicas serve every artifact when
they share this directory (one volume mounted at the same path): every step here is
a POSIX rename or an append to a file only one upload writes (SPEC §3.7).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import hashlib
import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol

READ_CHUNK = 1 << 20
NOT_STORED = "the artifact is not stored yet (its node is still uploading it)"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_KEY = re.compile(r"^[0-9A-Za-z_-]{1,64}$")


class BlobError(ValueError):
    """A name that is not a SHA-256 or an upload key, or an offset past what is held."""


class Corrupt(Exception):
    """The bytes uploaded do not hash to what the node announced; the upload is gone."""


class BlobStore(Protocol):
    def has(self, sha256: str) -> bool: ...

    def size(self, sha256: str) -> int: ...

    def open(self, sha256: str) -> BinaryIO: ...

    def delete(self, sha256: str) -> None: ...

    def sha256s(self) -> Iterator[str]: ...

    def partial_size(self, key: str) -> int: ...

    def resume(self, key: str, offset: int) -> Upload: ...

    def seal(self, key: str, sha256: str, *, digest: str | None = None) -> None: ...

    def discard(self, key: str) -> None: ...

    def remove_stale_uploads(self, older_than: float) -> int: ...


def _check_sha(sha256: str) -> str:
    if not _SHA256.match(sha256):
        raise BlobError("not a lower-case hex SHA-256")
    return sha256


def _check_key(key: str) -> str:
    if not _KEY.match(key):
        raise BlobError("bad upload key")
    return key


# Written bytes are handed to the disk in the background every this many bytes, so the
# fsync that ends an upload finds little left to write.
WRITEBACK_BYTES = 8 << 20
_SYNC_FILE_RANGE_WAIT_BEFORE = 1
_SYNC_FILE_RANGE_WRITE = 2
_SYNC_FILE_RANGE_WAIT_AFTER = 4


def _load_sync_file_range() -> Any:
    """libc's sync_file_range (Linux), or None where there is none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        call = libc.sync_file_range
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int
    return call


_sync_file_range = _load_sync_file_range()


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Starts writing a range of dirty pages to disk and returns at once. Not a
    durability step (only fsync is): it spreads the disk's work over the upload."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def drop_behind(fd: int, offset: int, length: int) -> None:
    """Lets a range already read, or written and handed to the disk, leave the page
    cache. A blob is written once and read seldom, so its pages are better given back
    than kept: the next megabytes of the same upload or download reuse them instead of
    taking fresh ones (zeroed, and on a VM first faulted in by the host), and a store of
    large files does not push everything else out of the cache. Waits for the range's
    writeback first (DONTNEED passes over dirty pages). Not a durability step: only
    fsync is."""
    if _sync_file_range is not None:
        flags = _SYNC_FILE_RANGE_WAIT_BEFORE | _SYNC_FILE_RANGE_WRITE | _SYNC_FILE_RANGE_WAIT_AFTER
        _sync_file_range(fd, offset, length, flags)
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Upload:
    """An open upload: bytes appended in order; `close` makes them durable."""

    def __init__(self, fd: int, offset: int) -> None:
        self._fd = fd
        self.offset = offset
        # Handed to the disk up to here.
        self._flushed = offset

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            written = os.pwrite(self._fd, view, self.offset)
            self.offset += written
            view = view[written:]
        if self.offset - self._flushed >= WRITEBACK_BYTES:
            start_writeback(self._fd, self._flushed, self.offset - self._flushed)
            # The steps handed over before this one have had a step's time to reach the
            # disk: their pages go, so the upload's cache stays at about two steps. The
            # range starts at 0 each time: the page cache may hold a file in folios larger
            # than a page, and one is let go only when the range covers all of it.
            drop_behind(self._fd, 0, self._flushed)
            self._flushed = self.offset
        return self.offset

    def close(self) -> None:
        """fsync, then close: the offset answered to the node is on disk."""
        if self._fd < 0:
            return
        try:
            os.fsync(self._fd)
            drop_behind(self._fd, 0, self.offset)
        finally:
            os.close(self._fd)
            self._fd = -1


class FsBlobStore:
    """Blobs in a local (or shared) directory. Every method blocks: call it in a thread."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._blobs = root / "blobs"
        self._incoming = root / "incoming"
        for path in (root, self._blobs, self._incoming):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        sha = _check_sha(sha256)
        return self._blobs / sha[:2] / sha

    def _part(self, key: str) -> Path:
        return self._incoming / f"{_check_key(key)}.part"

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def size(self, sha256: str) -> int:
        return self.path(sha256).stat().st_size

    def open(self, sha256: str) -> BinaryIO:
        return self.path(sha256).open("rb")

    def delete(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)

    def sha256s(self) -> Iterator[str]:
        for path in self._blobs.glob("??/*"):
            if _SHA256.match(path.name):
                yield path.name

    def partial_size(self, key: str) -> int:
        try:
            return self._part(key).stat().st_size
        except FileNotFoundError:
            return 0

    def resume(self, key: str, offset: int) -> Upload:
        """The upload `key`, to be written from `offset` on (anything held past it is cut
        off: a resend from there replaces it). BlobError when `offset` is past what is
        held."""
        fd = os.open(self._part(key), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            held = os.fstat(fd).st_size
            if offset > held:
                raise BlobError(f"offset {offset} is past the {held} bytes held")
            if offset < held:
                os.ftruncate(fd, offset)
        except BaseException:
            os.close(fd)
            raise
        return Upload(fd, offset)

    def seal(self, key: str, sha256: str, *, digest: str | None = None) -> None:
        """Turns the upload into the blob `sha256` once its bytes hash to it (raises
        Corrupt, and drops the upload, when they do not). `digest` is the hash the caller
        took while receiving every byte, which saves reading the file again."""
        part = self._part(key)
        target = self.path(sha256)
        if digest is None:
            hasher = hashlib.sha256()
            with part.open("rb") as source:
                while block := source.read(READ_CHUNK):
                    hasher.update(block)
                    drop_behind(source.fileno(), 0, source.tell())
            digest = hasher.hexdigest()
        if digest != sha256:
            part.unlink(missing_ok=True)
            raise Corrupt(f"upload {key} hashes to {digest}, not {sha256}")
        if target.exists():
            part.unlink()  # the same content is stored already
            return
        target.parent.mkdir(mode=0o700, exist_ok=True)
        part.rename(target)
        _fsync_dir(target.parent)

    def discard(self, key: str) -> None:
        self._part(key).unlink(missing_ok=True)

    def remove_stale_uploads(self, older_than: float) -> int:
        """`.part` files not written since `older_than` (a Unix time): abandoned."""
        gone = 0
        for part in self._incoming.glob("*.part"):
            try:
                if part.stat().st_mtime < older_than:
                    part.unlink()
                    gone += 1
            except FileNotFoundError:
                continue
        return gone


async def read_blob(
    blobs: FsBlobStore, sha256: str, start: int, end: int, chunk: int = READ_CHUNK
) -> AsyncIterator[bytes]:
    source = await asyncio.to_thread(blobs.open, sha256)
    try:
        await asyncio.to_thread(source.seek, start)
        left = end - start
        while left > 0:
            block = await asyncio.to_thread(_read_dropping, source, start, min(chunk, left))
            if not block:
                break
            left -= len(block)
            yield block
    finally:
        source.close()


def _read_dropping(source: BinaryIO, start: int, size: int) -> bytes:
    """The next block of a blob read from `start` on; what has been read leaves the
    cache (drop_behind; from `start` each time, for the reason Upload.write gives)."""
    block = source.read(size)
    drop_behind(source.fileno(), start, source.tell() - start)
    return block
