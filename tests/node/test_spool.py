"""The result spool: one private file per (job, attempt), safe names, bad files skipped."""

from __future__ import annotations

from pathlib import Path

from cynode.jobs.v1 import job_pb2
from cynode.node.spool import ResultSpool


def result(job_id: str, attempt: int = 1) -> job_pb2.JobResult:
    return job_pb2.JobResult(job_id=job_id, attempt=attempt, status=job_pb2.JOB_STATUS_COMPLETED)


def test_spool_put_get_delete_and_order(tmp_path: Path) -> None:
    spool = ResultSpool(tmp_path / "spool")
    path = spool.put(result("A"))
    assert path.stat().st_mode & 0o777 == 0o600
    spool.put(result("B", 2))
    spool.put(result("../evil", 1))
    assert spool.path_for("../evil", 1).parent == spool.directory
    assert [r.job_id for r in spool.all()] == ["A", "B", "../evil"]
    assert spool.get("B", 2) == result("B", 2)
    assert spool.get("B", 3) is None
    assert spool.delete("A", 1)
    assert not spool.delete("A", 1)
    (spool.directory / "junk.1.result").write_bytes(b"\xff\xff\xff")
    assert [r.job_id for r in spool.all()] == ["B", "../evil"]
    assert not list(spool.directory.glob(".*.tmp"))
