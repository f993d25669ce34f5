"""WatchTask: the current status first, then status changes and output as it lands,
ending with one event marked terminal.

Woken by the EventBus topic `task:<id>` (this process) and by a poll of the store every
`poll_interval` seconds (changes written by another replica). A wake from this process's
ingest that carries the task's end (`lifecycle.Ended`) is applied to the last read
instead of reading again: it holds every column of the task and the job that the
commit changed, with the values written.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import datetime

from sqlmodel import col, select

from cynode.orchestrator.artifacts import catalog
from cynode.orchestrator.auth import Principal
from cynode.orchestrator.events import task_topic
from cynode.orchestrator.gateway.tasks import TaskBook
from cynode.orchestrator.lifecycle import TERMINAL, Ended
from cynode.orchestrator.store import ArtifactSet, Job, JobOutputChunk, Task, utcnow

STREAMS = ("stdout", "stderr")


@dataclass(frozen=True)
class WatchEvent:
    task_id: str
    status: str
    at: datetime
    stream: str = ""
    chunk: str = ""
    terminal: bool = False
    # On the terminal event: the task and its jobs as that last read found them (what
    # a result built for the watcher is made of, without reading them again).
    task: Task | None = None
    jobs: tuple[Job, ...] = ()
    # With `with_listing`: the artifact listing, read in that same session.
    listing: catalog.Listing | None = None


@dataclass
class _Cursor:
    """What of the current job attempt's output has been sent."""

    job_key: tuple[str, int] | None = None
    sent: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STREAMS, 0))
    last_chunk_id: int = 0
    decoders: dict[str, codecs.IncrementalDecoder] = field(default_factory=dict)

    def reset(self, key: tuple[str, int]) -> None:
        self.job_key = key
        self.sent = dict.fromkeys(STREAMS, 0)
        self.last_chunk_id = 0
        self.decoders = {s: codecs.getincrementaldecoder("utf-8")("replace") for s in STREAMS}

    def decode(self, stream: str, data: bytes, final: bool = False) -> str:
        return self.decoders[stream].decode(data, final)


async def _snapshot(
    book: TaskBook, task_id: str, cursor: _Cursor, with_listing: bool = False
) -> tuple[Task, list[Job], list[JobOutputChunk], catalog.Listing | None]:
    listing = None
    async with book.factory() as session:
        task = await session.get(Task, task_id, populate_existing=True)
        assert task is not None  # tasks are never deleted
        jobs = await book.jobs_of(session, task_id)
        job = jobs[-1] if jobs else None
        chunks: list[JobOutputChunk] = []
        if job is not None:
            key = (job.id, job.attempt)
            if cursor.job_key != key:
                cursor.reset(key)
            chunks = list(
                await session.exec(
                    select(JobOutputChunk)
                    .where(
                        JobOutputChunk.job_id == job.id,
                        JobOutputChunk.attempt == job.attempt,
                        col(JobOutputChunk.id) > cursor.last_chunk_id,
                    )
                    .order_by(col(JobOutputChunk.id))
                )
            )
        if with_listing and task.status in TERMINAL:
            # The terminal event's result needs it: no second session for it.
            listing = await catalog.listing_in(session, task, jobs)
    return task, jobs, chunks, listing


async def _ended(
    book: TaskBook,
    task: Task,
    jobs: list[Job],
    cursor: _Cursor,
    end: Ended,
    with_listing: bool,
) -> tuple[Task, list[Job], list[JobOutputChunk], catalog.Listing | None] | None:
    """What `_snapshot` would read right after the commit that ended the task, made
    from the last read and the end; None when the end is not about the job that read
    found last (then the caller reads)."""
    if not jobs or jobs[-1].id != end.job_id or task.id != end.task_id:
        return None
    # Detached objects of this watcher's own last read: nothing else holds them.
    job = jobs[-1]
    end.onto(task, job)
    key = (job.id, job.attempt)
    if cursor.job_key != key:
        cursor.reset(key)
    # Chunks not read yet need no read: the final output (the tail) carries them.
    listing = None
    if with_listing and end.artifacts == 0:
        # The set the same commit recorded, empty: complete, nothing to list.
        found = ArtifactSet(task_id=task.id, job_id=job.id, attempt=job.attempt, count=0)
        listing = catalog.Listing(task, found, [])
    elif with_listing:
        async with book.factory() as session:
            listing = await catalog.listing_in(session, task, jobs)
    return task, jobs, [], listing


def _output_events(task: Task, cursor: _Cursor, chunks: list[JobOutputChunk]) -> list[WatchEvent]:
    events = []
    for chunk in chunks:
        cursor.last_chunk_id = max(cursor.last_chunk_id, chunk.id or 0)
        if chunk.stream not in STREAMS:
            continue
        pos = cursor.sent[chunk.stream]
        end = chunk.offset + len(chunk.data)
        if end <= pos or chunk.offset > pos:
            # Already sent, or a gap (a chunk not stored yet); the final output fills gaps.
            continue
        text = cursor.decode(chunk.stream, chunk.data[pos - chunk.offset :])
        cursor.sent[chunk.stream] = end
        if text:
            events.append(
                WatchEvent(task.id, task.status, utcnow(), stream=chunk.stream, chunk=text)
            )
    return events


def _tail_events(task: Task, job: Job | None, cursor: _Cursor) -> list[WatchEvent]:
    """Output of the finished job that no chunk carried."""
    if job is None or cursor.job_key is None:
        return []
    events = []
    for stream in STREAMS:
        data: bytes = getattr(job, stream)
        rest = data[cursor.sent[stream] :]
        cursor.sent[stream] = max(cursor.sent[stream], len(data))
        text = cursor.decode(stream, rest, final=True)
        if text:
            events.append(WatchEvent(task.id, task.status, utcnow(), stream=stream, chunk=text))
    return events


async def watch_task(
    book: TaskBook,
    principal: Principal,
    ref: str,
    poll_interval: float = 1.0,
    with_listing: bool = False,
) -> AsyncIterator[WatchEvent]:
    task = await book.find(principal, ref)
    async with book.bus.subscribe(task_topic(task.id)) as wake:
        cursor = _Cursor()
        last_status: str | None = None
        jobs: list[Job] = []
        handed: Ended | None = None
        while True:
            state = None
            if handed is not None:
                state = await _ended(book, task, jobs, cursor, handed, with_listing)
            if state is None:
                state = await _snapshot(book, task.id, cursor, with_listing)
            task, jobs, chunks, listing = state
            if task.status in TERMINAL:
                if last_status is not None:
                    for event in _output_events(task, cursor, chunks):
                        yield event
                    for event in _tail_events(task, jobs[-1] if jobs else None, cursor):
                        yield event
                end = WatchEvent(task.id, task.status, task.updated_at, terminal=True)
                yield replace(end, task=task, jobs=tuple(jobs), listing=listing)
                return
            if task.status != last_status:
                last_status = task.status
                yield WatchEvent(task.id, task.status, task.updated_at)
            for event in _output_events(task, cursor, chunks):
                yield event
            handed = None
            with contextlib.suppress(TimeoutError):
                handed = _last_end(await asyncio.wait_for(wake.get(), poll_interval), wake)


def _last_end(first: object, wake: asyncio.Queue[object]) -> Ended | None:
    """The task's end among the wakes queued up, if one is: it is the task's last
    state (terminal), so the wakes before or beside it need no read of their own."""
    found = first if isinstance(first, Ended) else None
    while not wake.empty():
        payload = wake.get_nowait()
        if isinstance(payload, Ended):
            found = payload
    return found
