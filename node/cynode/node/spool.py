"""The result spool: a job's result is written here as it goes up the stream (SPEC §4.9).

One file per (job, attempt), written atomically; it is deleted only when the
orchestrator acknowledges the result, and every spooled result is resent after each
reconnect, so a lost stream or a restart never loses a result.
"""

from __future__ import annotations

import re
from pathlib import Path

from google.protobuf.message import DecodeError

from cynode.jobs.v1 import job_pb2

from .state import atomic_write, ensure_private_dir

_SAFE = re.compile(r"[^A-Za-z0-9_-]")
_SUFFIX = ".result"


def _file_name(job_id: str, attempt: int) -> str:
    # Job ids are ULIDs; anything else is neutralised so an id can never name a path.
    return f"{_SAFE.sub('_', job_id)}.{attempt}{_SUFFIX}"


class ResultSpool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        ensure_private_dir(directory)

    def path_for(self, job_id: str, attempt: int) -> Path:
        return self.directory / _file_name(job_id, attempt)

    def put(self, result: job_pb2.JobResult) -> Path:
        path = self.path_for(result.job_id, result.attempt)
        atomic_write(path, result.SerializeToString())
        return path

    def delete(self, job_id: str, attempt: int) -> bool:
        try:
            self.path_for(job_id, attempt).unlink()
        except FileNotFoundError:
            return False
        return True

    def has(self, job_id: str, attempt: int) -> bool:
        return self.path_for(job_id, attempt).exists()

    def get(self, job_id: str, attempt: int) -> job_pb2.JobResult | None:
        try:
            data = self.path_for(job_id, attempt).read_bytes()
        except FileNotFoundError:
            return None
        return job_pb2.JobResult.FromString(data)

    def all(self) -> list[job_pb2.JobResult]:
        """Every spooled result, oldest file first; unreadable files are skipped."""
        results: list[job_pb2.JobResult] = []
        paths = sorted(self.directory.glob(f"*{_SUFFIX}"), key=lambda p: p.stat().st_mtime_ns)
        for path in paths:
            try:
                results.append(job_pb2.JobResult.FromString(path.read_bytes()))
            except (OSError, DecodeError):
                continue
        return results
