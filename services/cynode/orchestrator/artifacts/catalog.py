"""What the gateway says about a task's artifacts (SPEC §2.11): the listing of the job's
current attempt, and one artifact of the task for a download. Visibility is the
task's: another user's task is answered like one that does not exist."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from cynode.jobs.v1 import job_pb2
from cynode.orchestrator import lifecycle
from cynode.orchestrator.auth import Principal
from cynode.orchestrator.gateway.tasks import TaskBook
from cynode.orchestrator.store import Artifact, ArtifactSet, Job, Task


class ArtifactNotFound(LookupError):
    pass


@dataclass(frozen=True)
class Listing:
    task: Task
    found: ArtifactSet | None
    artifacts: list[Artifact]
    # The job ended with no result to come (canceled before a node held it, or its
    # last lease ran out): it has no artifacts, and that is final.
    settled_empty: bool = False

    @property
    def complete(self) -> bool:
        """The job has ended, its result named its set, and every file is stored."""
        if self.found is None:
            return self.settled_empty
        return all(a.stored_at is not None for a in self.artifacts)


def artifact_message(row: Artifact) -> job_pb2.Artifact:
    return job_pb2.Artifact(
        artifact_id=row.id,
        name=row.name,
        size_bytes=row.size_bytes,
        content_type=row.content_type,
        sha256=row.sha256,
    )


async def listing_in(session: AsyncSession, task: Task, jobs: list[Job]) -> Listing:
    """The listing of a task already found, read in the caller's session (GetTaskResult
    reads the task, its jobs and this in one)."""
    if not jobs or jobs[-1].status not in lifecycle.TERMINAL:
        return Listing(task, None, [])
    job = jobs[-1]
    # The set and its files in one statement (each one costs the gateway a few thread
    # hops on SQLite): files exist only with their set, written in one transaction.
    rows = list(
        await session.exec(
            select(ArtifactSet, Artifact)
            .outerjoin(
                Artifact,
                sa.and_(
                    col(Artifact.job_id) == col(ArtifactSet.job_id),
                    col(Artifact.attempt) == col(ArtifactSet.attempt),
                ),
            )
            .where(ArtifactSet.job_id == job.id, ArtifactSet.attempt == job.attempt)
            .order_by(col(Artifact.name))
        )
    )
    found = rows[0][0] if rows else None
    files = [row for _, row in rows if row is not None]
    settled = found is None and (job.node_id is None or job.reason == lifecycle.Reason.NODE_LOST)
    return Listing(task, found, files, settled_empty=settled)


async def listing(book: TaskBook, principal: Principal, ref: str) -> Listing:
    """The task's artifacts: those of its last job's current attempt, by name."""
    async with book.factory() as session:
        task = await book.find_in(session, principal, ref)
        return await listing_in(session, task, await book.jobs_of(session, task.id))


async def find(
    book: TaskBook, principal: Principal, ref: str, artifact_id: str
) -> tuple[Task, Artifact]:
    """One artifact of a task the caller may see; ArtifactNotFound otherwise (also for
    an artifact of another task)."""
    task = await book.find(principal, ref)
    async with book.factory() as session:
        row = await session.get(Artifact, artifact_id.strip().upper())
    if row is None or row.task_id != task.id:
        raise ArtifactNotFound(artifact_id)
    return task, row


__all__ = [
    "ArtifactNotFound",
    "Listing",
    "artifact_message",
    "find",
    "listing",
    "listing_in",
]
