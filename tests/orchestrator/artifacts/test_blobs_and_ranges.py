"""The filesystem blob store and the download's Range and Content-Disposition rules."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from cynode.orchestrator.artifacts.blobs import BlobError, Corrupt, FsBlobStore, read_blob
from cynode.orchestrator.artifacts.download import RangeError, disposition, parse_range


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_an_upload_becomes_a_blob_only_when_its_hash_matches(tmp_path: Path) -> None:
    store = FsBlobStore(tmp_path)
    upload = store.resume("KEY1", 0)
    upload.write(b"hello ")
    upload.close()
    assert store.partial_size("KEY1") == 6 and not store.has(sha(b"hello world"))
    upload = store.resume("KEY1", 6)
    upload.write(b"world")
    upload.close()
    upload.close()  # twice is harmless
    store.seal("KEY1", sha(b"hello world"))
    assert store.path(sha(b"hello world")).read_bytes() == b"hello world"
    assert store.size(sha(b"hello world")) == 11 and store.partial_size("KEY1") == 0
    assert list(store.sha256s()) == [sha(b"hello world")]
    # The same content again: the upload just goes.
    again = store.resume("KEY2", 0)
    again.write(b"hello world")
    again.close()
    store.seal("KEY2", sha(b"hello world"), digest=sha(b"hello world"))
    assert store.partial_size("KEY2") == 0
    store.delete(sha(b"hello world"))
    assert not store.has(sha(b"hello world"))


def test_a_resend_from_an_earlier_offset_replaces_the_tail(tmp_path: Path) -> None:
    store = FsBlobStore(tmp_path)
    first = store.resume("K", 0)
    first.write(b"abcXXXX")
    first.close()
    second = store.resume("K", 3)
    second.write(b"def")
    second.close()
    store.seal("K", sha(b"abcdef"))
    assert store.path(sha(b"abcdef")).read_bytes() == b"abcdef"


def test_corrupt_uploads_and_bad_names_are_refused(tmp_path: Path) -> None:
    store = FsBlobStore(tmp_path)
    upload = store.resume("K", 0)
    upload.write(b"not it")
    upload.close()
    with pytest.raises(Corrupt):
        store.seal("K", sha(b"something else"))
    assert store.partial_size("K") == 0  # dropped: the next upload starts over
    with pytest.raises(BlobError):
        store.resume("K", 10)  # past what is held
    for bad in ("../x", "", "a" * 65, "a/b"):
        with pytest.raises(BlobError):
            store.resume(bad, 0)
    for bad_sha in ("ABC", "0" * 63, "g" * 64, "../" + "0" * 61):
        with pytest.raises(BlobError):
            store.path(bad_sha)
    store.discard("K")


async def test_read_blob_streams_the_asked_slice(tmp_path: Path) -> None:
    store = FsBlobStore(tmp_path)
    data = bytes(range(256)) * 9000
    upload = store.resume("K", 0)
    upload.write(data)
    upload.close()
    store.seal("K", sha(data))
    got = b"".join([b async for b in read_blob(store, sha(data), 1000, 2_000_000)])
    assert got == data[1000:2_000_000]
    tail = b"".join([b async for b in read_blob(store, sha(data), len(data) - 5, len(data) + 50)])
    assert tail == data[-5:]


@pytest.mark.parametrize(
    ("header", "want"),
    [
        (None, None),
        ("bytes=0-0", (0, 1)),
        ("bytes=2-5", (2, 6)),
        ("bytes=5-", (5, 10)),
        ("bytes=-3", (7, 10)),
        ("bytes=-30", (0, 10)),
        ("bytes=3-99", (3, 10)),
        ("bytes=0-1,4-5", None),  # several ranges: the whole file
    ],
)
def test_ranges(header: str | None, want: tuple[int, int] | None) -> None:
    assert parse_range(header, 10) == want


@pytest.mark.parametrize("header", ["bytes=10-", "bytes=5-2", "bytes=-0", "bytes=-", "items=0-1"])
def test_unsatisfiable_or_malformed_ranges(header: str) -> None:
    with pytest.raises(RangeError):
        parse_range(header, 10)


def test_disposition_keeps_the_base_name_safe() -> None:
    assert disposition("data/part-1.csv") == (
        "attachment; filename=\"part-1.csv\"; filename*=UTF-8''part-1.csv"
    )
    odd = disposition('rép"ort.txt')
    assert 'filename="r_p_ort.txt"' in odd and "filename*=UTF-8''r%C3%A9p%22ort.txt" in odd


def test_an_upload_past_the_writeback_step_keeps_every_byte(tmp_path: Path) -> None:
    """Writeback is started in the background every WRITEBACK_BYTES; the bytes and the
    resumable size are exactly what was written, across several steps and a resume."""
    from cynode.orchestrator.artifacts import blobs

    assert blobs._sync_file_range is not None  # Linux: the writeback hint is really used
    block = bytes(range(256)) * 4096  # 1 MiB
    data = block * (2 * blobs.WRITEBACK_BYTES // len(block) + 3)
    store = FsBlobStore(tmp_path)
    upload = store.resume("BIG", 0)
    half = len(data) // 2 + 7
    for start in range(0, half, len(block)):
        upload.write(data[start : min(start + len(block), half)])
    upload.close()
    assert store.partial_size("BIG") == half
    upload = store.resume("BIG", half)
    upload.write(data[half:])
    upload.close()
    store.seal("BIG", sha(data))  # resumed: hashed by reading the file again
    if _drops_pages(tmp_path):
        assert not any(_resident(store.path(sha(data))))
    assert store.path(sha(data)).read_bytes() == data


def _resident(path: Path) -> list[bool]:
    """Which pages of a file are in the page cache (mincore(2) on a read-only mapping)."""
    import ctypes
    import mmap

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    size = path.stat().st_size
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    with path.open("rb") as source:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, source.fileno(), 0)
    assert addr not in (None, ctypes.c_void_p(-1).value)
    try:
        vec = ctypes.create_string_buffer(pages)
        assert libc.mincore(addr, size, vec) == 0
        return [bool(byte & 1) for byte in vec.raw]
    finally:
        libc.munmap(addr, size)


def _drops_pages(tmp_path: Path) -> bool:
    """Whether this filesystem lets clean pages go on POSIX_FADV_DONTNEED (tmpfs keeps
    them: they are the file)."""
    probe = tmp_path / "probe"
    probe.write_bytes(b"x" * (1 << 20))
    with probe.open("rb") as source:
        os.fsync(source.fileno())
        os.posix_fadvise(source.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    return not any(_resident(probe))


def test_an_upload_keeps_only_its_last_steps_in_the_page_cache(tmp_path: Path) -> None:
    """Every step but the last two leaves the cache as the upload goes (drop_behind);
    the bytes are all there, and the blob is whole."""
    from cynode.orchestrator.artifacts import blobs

    if not _drops_pages(tmp_path):
        pytest.skip("this filesystem keeps clean pages on DONTNEED")
    block = os.urandom(1 << 20)
    steps = 5
    data = block * (steps * blobs.WRITEBACK_BYTES // len(block))
    store = FsBlobStore(tmp_path)
    upload = store.resume("DROP", 0)
    for start in range(0, len(data), len(block)):
        upload.write(data[start : start + len(block)])
    part = tmp_path / "incoming" / "DROP.part"
    resident = _resident(part)
    per_step = blobs.WRITEBACK_BYTES // mmap_pagesize()
    # The first steps went; the last ones (written, handed over, not yet waited for) stay.
    assert not any(resident[: (steps - 2) * per_step])
    assert any(resident[(steps - 1) * per_step :])
    upload.close()
    assert not any(_resident(part))  # durable now: the rest goes too
    store.seal("DROP", sha(data))
    assert store.path(sha(data)).read_bytes() == data


async def test_a_download_leaves_no_pages_of_the_blob_behind(tmp_path: Path) -> None:
    if not _drops_pages(tmp_path):
        pytest.skip("this filesystem keeps clean pages on DONTNEED")
    data = os.urandom(3 << 20)
    store = FsBlobStore(tmp_path)
    upload = store.resume("READ", 0)
    upload.write(data)
    upload.close()
    store.seal("READ", sha(data))
    assert store.path(sha(data)).read_bytes() == data  # a plain read caches its pages
    assert all(_resident(store.path(sha(data))))
    got = b"".join([b async for b in read_blob(store, sha(data), 0, len(data), 1 << 20)])
    assert got == data
    assert not any(_resident(store.path(sha(data))))


def mmap_pagesize() -> int:
    import mmap

    return mmap.PAGESIZE
