"""The artifact spool: a job attempt's collected files, kept until the orchestrator has
stored each one (the promise the result spool keeps for results, SPEC §4.9).

Layout under the node's state dir: `artifacts/<job_id>.<attempt>/` holds `set.pb` (the
ArtifactSet, what the job's result announced) and one file per artifact not yet stored,
named by its artifact id. Collection writes into `<job_id>.<attempt>.partial/` and
renames it into place once `set.pb` is written, so a directory without that suffix is
always whole; a `.partial` one is what a node that died mid-collection left, and goes.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import DecodeError

from cynode.jobs.v1 import job_pb2
from cynode.node.state import atomic_write, ensure_private_dir

_SAFE = re.compile(r"[^A-Za-z0-9_-]")
SET_FILE = "set.pb"
PARTIAL = ".partial"


def _dir_name(job_id: str, attempt: int) -> str:
    return f"{_SAFE.sub('_', job_id)}.{attempt}"


@dataclass(frozen=True)
class Pending:
    """An artifact still to upload, and where its bytes are."""

    job_id: str
    attempt: int
    artifact: job_pb2.Artifact
    path: Path


class ArtifactSpool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        ensure_private_dir(directory)

    def path_for(self, job_id: str, attempt: int) -> Path:
        return self.directory / _dir_name(job_id, attempt)

    def start(self, job_id: str, attempt: int) -> Path:
        """A fresh, empty directory to collect into (a leftover of a try before goes)."""
        partial = self.directory / (_dir_name(job_id, attempt) + PARTIAL)
        shutil.rmtree(partial, ignore_errors=True)
        ensure_private_dir(partial)
        return partial

    def finish(self, partial: Path, job_id: str, attempt: int, found: job_pb2.ArtifactSet) -> None:
        """Writes the set beside its files and puts the directory in place."""
        atomic_write(partial / SET_FILE, found.SerializeToString())
        final = self.path_for(job_id, attempt)
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)

    def abandon(self, partial: Path) -> None:
        shutil.rmtree(partial, ignore_errors=True)

    def remove_partials(self) -> int:
        """At start: directories of collections a dead node never finished."""
        gone = 0
        for path in self.directory.glob(f"*{PARTIAL}"):
            shutil.rmtree(path, ignore_errors=True)
            gone += 1
        return gone

    def read_set(self, job_id: str, attempt: int) -> job_pb2.ArtifactSet | None:
        try:
            data = (self.path_for(job_id, attempt) / SET_FILE).read_bytes()
            return job_pb2.ArtifactSet.FromString(data)
        except (OSError, DecodeError):
            return None

    def jobs(self) -> list[tuple[str, int]]:
        """Every (job_id, attempt) with a whole set in the spool, oldest first."""
        found: list[tuple[float, str, int]] = []
        for path in self.directory.iterdir():
            if path.name.endswith(PARTIAL) or not (path / SET_FILE).exists():
                continue
            job, _, attempt = path.name.rpartition(".")
            if job and attempt.isdigit():
                found.append((path.stat().st_mtime, job, int(attempt)))
        return [(job, attempt) for _, job, attempt in sorted(found)]

    def pending(self, job_id: str, attempt: int) -> list[Pending]:
        """The artifacts of that job whose bytes are still here, in the set's order."""
        found = self.read_set(job_id, attempt)
        if found is None:
            return []
        directory = self.path_for(job_id, attempt)
        return [
            Pending(job_id, attempt, artifact, directory / artifact.artifact_id)
            for artifact in found.artifacts
            if (directory / artifact.artifact_id).exists()
        ]

    def done(self, item: Pending) -> None:
        """The orchestrator holds this artifact (or does not want it): its bytes go, and
        the job's directory once nothing is left in it."""
        item.path.unlink(missing_ok=True)
        if not self.pending(item.job_id, item.attempt):
            shutil.rmtree(self.path_for(item.job_id, item.attempt), ignore_errors=True)

    def drop(self, job_id: str, attempt: int) -> None:
        shutil.rmtree(self.path_for(job_id, attempt), ignore_errors=True)
