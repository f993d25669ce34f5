"""What the gateway says about a task's artifacts (SPEC §2.11): the listing of the job's
current attempt, and one artifact of the task for a download. Visibility is the
task's: another user's task is answered like one that does not exist."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from cynode.jobs.v1 import job_pb2
from cynode.orchestrator import lifecycle
from cynode.orchestrator.auth import Principal
from cynode.orchestrator.events import task_topic
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


# The longest a listing waits for its set to be complete (SPEC §2.11): a client that
# wants longer asks again; well inside any proxy's and client's request timeout.
MAX_WAIT_SECONDS = 10


async def wait_complete(
    book: TaskBook, principal: Principal, ref: str, wait: float, recheck: float = 1.0
) -> Listing:
    """The listing once it is complete, or as it is after `wait` seconds.

    Woken by the task's topic on the EventBus, which the upload service publishes when
    it seals an upload (and the ingest when the job's result lands); another replica's
    seal arrives as a NOTIFY on the same topic. `recheck` is the watch's safety net
    for a missed notification (a reconnecting LISTEN), not a poll loop: every wake
    and every recheck is one listing read."""
    found = await listing(book, principal, ref)
    if found.complete or wait <= 0:
        return found
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(wait, MAX_WAIT_SECONDS)
    task_id = found.task.id
    async with book.bus.subscribe(task_topic(task_id)) as wake:
        while True:
            # Read after subscribing, so a seal between the first read and the
            # subscription is not missed.
            found = await listing(book, principal, task_id)
            left = deadline - loop.time()
            if found.complete or left <= 0:
                return found
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.get(), min(left, recheck))
            while not wake.empty():  # wakes that came together: one read for all
                wake.get_nowait()


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
    "wait_complete",
]
