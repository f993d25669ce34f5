"""The node's artifact spool and the collection rules that need no container."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from cynode.jobs.v1 import job_pb2
from cynode.node.artifacts import ArtifactSpool
from cynode.node.runtime.collect import (
    CHUNK,
    PARALLEL_BYTES,
    Limits,
    _copy_file,
    _send_all,
    collect_dir,
    collect_tar,
    content_type,
    safe_name,
)


def test_a_set_is_whole_or_absent(tmp_path: Path) -> None:
    spool = ArtifactSpool(tmp_path)
    partial = spool.start("JOB", 1)
    (partial / "A1").write_bytes(b"one")
    assert spool.jobs() == []  # still partial
    found = job_pb2.ArtifactSet(
        artifacts=[
            job_pb2.Artifact(artifact_id="A1", name="a"),
            job_pb2.Artifact(artifact_id="A2", name="b"),
        ]
    )
    (partial / "A2").write_bytes(b"two")
    spool.finish(partial, "JOB", 1, found)
    assert spool.jobs() == [("JOB", 1)] and spool.read_set("JOB", 1) == found
    first, second = spool.pending("JOB", 1)
    spool.done(first)
    assert [p.artifact.artifact_id for p in spool.pending("JOB", 1)] == ["A2"]
    spool.done(second)
    assert spool.jobs() == [] and not spool.path_for("JOB", 1).exists()
    assert spool.pending("JOB", 1) == [] and spool.read_set("JOB", 1) is None


def test_partials_of_a_dead_node_go_at_start(tmp_path: Path) -> None:
    spool = ArtifactSpool(tmp_path)
    spool.start("J1", 1)
    spool.start("J2", 3)
    (tmp_path / "junk").mkdir()
    assert spool.remove_partials() == 2
    assert spool.jobs() == []
    spool.abandon(spool.start("J3", 1))
    spool.drop("J3", 1)
    assert list(tmp_path.iterdir()) == [tmp_path / "junk"]


@pytest.mark.parametrize(
    ("member", "name"),
    [
        ("out/report.pdf", "report.pdf"),
        ("./out/data/part-1.csv", "data/part-1.csv"),
        ("/out/a", "a"),
        ("out", None),
        ("out/", None),
        ("other/a", None),
        ("out/../etc/passwd", None),
        ("out/./a", None),
        ("out/a//b", None),
        ("out/a\nb", None),
        ("out/a\\b", None),
        ("out/" + "x" * 1100, None),
    ],
)
def test_safe_names(member: str, name: str | None) -> None:
    assert safe_name(member) == name


def test_content_types() -> None:
    assert content_type("a.json") == "application/json"
    assert content_type("noext") == "application/octet-stream"


def _tar(entries: list[tuple[tarfile.TarInfo, bytes]]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for info, data in entries:
            archive.addfile(info, io.BytesIO(data) if data else None)
    buffer.seek(0)
    return buffer


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def test_hard_links_devices_and_unsafe_names_are_skipped(tmp_path: Path) -> None:
    link = tarfile.TarInfo("out/hard")
    link.type, link.linkname = tarfile.LNKTYPE, "out/a"
    device = tarfile.TarInfo("out/dev")
    device.type = tarfile.CHRTYPE
    stream = _tar([_file("out/a", b"aaa"), (link, b""), (device, b""), _file("out/../x", b"x")])
    found = collect_tar(stream, tmp_path, Limits(100, 100))
    assert [a.name for a in found.artifacts] == ["a"]
    assert (tmp_path / found.artifacts[0].artifact_id).read_bytes() == b"aaa"


def test_a_stopped_jobs_out_is_copied_in_one_pass_and_nothing_is_followed(
    tmp_path: Path,
) -> None:
    """collect_dir(copy=True), the bounded workspace read in place: big files cross the
    copy buffer more than once and keep their SHA-256; links, FIFOs and files outside
    out/ stay where they are."""
    out = tmp_path / "ws" / "out"
    (out / "data").mkdir(parents=True)
    # Past the size copied in a thread beside the hash, more than one buffer, not a
    # multiple of it; the small files take the one-pass copy.
    big = os.urandom(max(2 * CHUNK, PARALLEL_BYTES) + 12345)
    (out / "data" / "big.bin").write_bytes(big)
    (out / "small.txt").write_bytes(b"hello")
    (out / "empty").write_bytes(b"")
    secret = tmp_path / "secret"
    secret.write_bytes(b"not yours")
    (out / "link").symlink_to(secret)
    os.mkfifo(out / "fifo")
    into = tmp_path / "spool"
    into.mkdir()
    found = collect_dir(out, into, Limits(1 << 30, 1 << 30), copy=True)
    assert [a.name for a in found.artifacts] == ["empty", "small.txt", "data/big.bin"]
    for artifact, data in zip(found.artifacts, (b"", b"hello", big), strict=True):
        assert (into / artifact.artifact_id).read_bytes() == data
        assert artifact.size_bytes == len(data)
        assert artifact.sha256 == hashlib.sha256(data).hexdigest()
    assert (out / "data" / "big.bin").read_bytes() == big  # copied, not moved
    assert sorted(p.name for p in into.iterdir()) == sorted(a.artifact_id for a in found.artifacts)


def test_a_file_swapped_for_a_link_or_fifo_after_the_walk_is_not_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"not yours")
    link = tmp_path / "link"
    link.symlink_to(secret)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert _copy_file(link, tmp_path / "a") is None
    assert _copy_file(fifo, tmp_path / "b") is None  # O_NONBLOCK: no hang either
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    with pytest.raises(FileNotFoundError):
        _copy_file(tmp_path / "gone", tmp_path / "c")


def test_an_out_that_is_a_link_is_empty_and_unsafe_names_are_skipped(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "passwd").write_bytes(b"root:x:0:0")
    (tmp_path / "out").symlink_to(elsewhere)
    into = tmp_path / "spool"
    into.mkdir()
    assert not collect_dir(tmp_path / "out", into, Limits(100, 100), copy=True).artifacts
    real = tmp_path / "real"
    real.mkdir()
    (real / "back\\slash").write_bytes(b"x")
    (real / "ok").write_bytes(b"y")
    found = collect_dir(real, into, Limits(100, 100), copy=True)
    assert [a.name for a in found.artifacts] == ["ok"]


def test_a_failed_kernel_copy_fails_the_file(tmp_path: Path) -> None:
    """The copying thread's error reaches the collecting thread (then the collection
    fails and the set is marked truncated by the hook), never a short copy."""
    source = tmp_path / "source"
    source.write_bytes(b"z" * 100)
    errors: list[BaseException] = []
    with source.open("rb") as data:
        _send_all(data.fileno(), -1, errors)  # no such target
    assert len(errors) == 1 and isinstance(errors[0], OSError)
