"""The node's artifact spool and the collection rules that need no container."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from cynode.jobs.v1 import job_pb2
from cynode.node.artifacts import ArtifactSpool
from cynode.node.runtime.collect import Limits, collect_tar, content_type, safe_name


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
