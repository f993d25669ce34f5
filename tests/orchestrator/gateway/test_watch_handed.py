"""The watch's terminal event built from the end the ingest hands over on the bus
(`lifecycle.Ended`, SPEC §3.6): nothing is read between the result's commit and the
event, and the event says exactly what a read would (GetTaskResult, a fresh watch),
on SQLite and Postgres. The result goes through the control plane's real ingest."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import select

from cynode.gateway.v1 import tasks_pb2
from cynode.jobs.v1 import job_pb2
from cynode.orchestrator import lifecycle
from cynode.orchestrator.controlplane.ingest import Ingest, Result, Started
from cynode.orchestrator.events import task_topic
from cynode.orchestrator.gateway import watch
from cynode.orchestrator.store import Job, Task
from cynode.orchestrator.store.models import new_id, utcnow
from tests.orchestrator.gatewaykit import Served, bearer, user_token

NODE = "N" * 26


async def _noop(conn: AsyncConnection, ids: set[str]) -> None:
    return None


def _ts(at: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(at)
    return stamp


class Reads:
    """The statements the engine runs while `on` is set."""

    def __init__(self, served: Served) -> None:
        self.on = False
        self.seen: list[str] = []
        self._engine = served.gateway.engine.sync_engine
        event.listen(self._engine, "before_cursor_execute", self._record)

    def _record(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if self.on:
            self.seen.append(statement)

    def close(self) -> None:
        event.remove(self._engine, "before_cursor_execute", self._record)


async def _claimed(served: Served, md: tuple[tuple[str, str], ...]) -> tuple[str, Job]:
    created = await served.tasks.CreateTask(
        tasks_pb2.CreateTaskRequest(commands=["echo out"]), metadata=md
    )
    async with served.gateway.factory() as s:
        job = (await s.exec(select(Job).where(Job.task_id == created.task_id))).one()
    return created.task_id, job


async def _claim(served: Served, job: Job) -> None:
    now = utcnow()
    async with served.gateway.engine.begin() as conn:
        await lifecycle.claim(conn, [(job.id, NODE, 1)], now, now + timedelta(seconds=30))


def _ingest(served: Served) -> Ingest:
    bus = served.gateway.bus

    def publish(ids: set[str], ended: Mapping[str, lifecycle.Ended]) -> None:
        # What the control plane does after the commit (plane._publish_tasks).
        for task_id in ids:
            bus.publish(task_topic(task_id), ended.get(task_id))

    return Ingest(served.gateway.engine, 30, _noop, publish)


async def _watch(
    served: Served, md: tuple[tuple[str, str], ...], task_id: str, events: list[Any]
) -> asyncio.Task[None]:
    request = tasks_pb2.WatchTaskRequest(task_id=task_id, include_result=True)

    async def consume() -> None:
        async for ev in served.tasks.WatchTask(request, metadata=md):
            events.append(ev)

    consumer = asyncio.create_task(consume())
    for _ in range(500):
        if events:
            return consumer
        await asyncio.sleep(0.01)
    raise AssertionError("no first event")


@pytest.mark.parametrize("case", ["running", "started_in_batch", "artifacts"])
async def test_terminal_event_from_the_handed_end(served: Served, case: str) -> None:
    _, pair = await user_token(served)
    md = bearer(pair.access_token)
    task_id, job = await _claimed(served, md)
    events: list[tasks_pb2.WatchTaskResponse] = []
    # The watcher's last read is before the claim: its job has attempt 0 and no node.
    consumer = await _watch(served, md, task_id, events)
    await _claim(served, job)
    start = datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)
    ingest = _ingest(served)
    batch: list[Any] = []
    result = job_pb2.JobResult(
        job_id=job.id,
        attempt=1,
        status=job_pb2.JOB_STATUS_FAILED,
        exit_code=3,
        stdout=b"out\n",
        stderr=b"err \xe2\x82",  # a cut UTF-8 sequence, decoded with replacement
        stdout_truncated=True,
        ended_at=_ts(start + timedelta(seconds=2)),
    )
    if case == "running":
        # Its start is stored already: the result's own start time does not replace it.
        await ingest.apply([Started(NODE, job.id, 1, start)])
        for _ in range(500):
            if events[-1].status == "running":
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # the watcher back waiting after that read
        result.started_at.CopyFrom(_ts(start + timedelta(seconds=1)))
    else:
        batch.append(Started(NODE, job.id, 1, start))
    if case == "artifacts":
        data = b"x"
        result.artifacts.artifacts.append(
            job_pb2.Artifact(
                artifact_id=new_id(),
                name="a.txt",
                size_bytes=1,
                content_type="text/plain",
                sha256=hashlib.sha256(data).hexdigest(),
            )
        )
    reads = Reads(served)
    try:
        reads.on = True
        await ingest.apply([*batch, Result(NODE, result, lambda: None)])
        await asyncio.wait_for(consumer, 5)
        reads.on = False
    finally:
        reads.close()
    await ingest.stop()
    # After the commit: no read at all, or (files announced) only the listing.
    ingest_reads = [s for s in reads.seen if not s.lstrip().upper().startswith("SELECT")]
    assert ingest_reads, "the ingest's own writes were recorded"
    selects = [s for s in reads.seen if s.lstrip().upper().startswith("SELECT")]
    loads = 1  # the ingest's load_jobs
    assert len(selects) == loads + (1 if case == "artifacts" else 0), selects
    end = events[-1]
    assert end.terminal and end.status == "failed"
    assert sum(e.terminal for e in events) == 1
    assert [(e.stream, e.chunk) for e in events if e.stream] == [
        ("stdout", "out\n"),
        ("stderr", "err \ufffd"),
    ]
    read = await served.tasks.GetTaskResult(
        tasks_pb2.GetTaskResultRequest(task_id=task_id), metadata=md
    )
    assert end.task_result == read
    assert read.jobs[0].attempt == 1 and read.jobs[0].node_id == NODE
    assert read.jobs[0].started_at == _ts(start)
    assert read.artifact_count == (1 if case == "artifacts" else 0)
    assert read.artifacts_complete is (case != "artifacts")
    again = [
        e
        async for e in served.tasks.WatchTask(
            tasks_pb2.WatchTaskRequest(task_id=task_id, include_result=True), metadata=md
        )
    ]
    assert again[-1].at == end.at and again[-1].task_result == end.task_result


async def test_an_end_for_another_job_is_read(served: Served) -> None:
    """A handed end that is not about the last read's job is not applied."""
    _, pair = await user_token(served)
    md = bearer(pair.access_token)
    task_id, _ = await _claimed(served, md)
    async with served.gateway.factory() as s:
        jobs = list((await s.exec(select(Job).where(Job.task_id == task_id))).all())
        task = await s.get(Task, task_id)
    assert task is not None
    now = utcnow()
    other = lifecycle.Ended(
        task_id=task_id,
        task_status="completed",
        task_reason=None,
        job_id=new_id(),
        attempt=1,
        node_id=NODE,
        status="completed",
        exit_code=0,
        stdout=b"",
        stderr=b"",
        stdout_truncated=False,
        stderr_truncated=False,
        reason=None,
        started_at=now,
        ended_at=now,
        at=now,
        artifacts=0,
    )
    cursor = watch._Cursor()
    assert await watch._ended(served.gateway.book, task, jobs, cursor, other, False) is None
    assert await watch._ended(served.gateway.book, task, [], cursor, other, False) is None
    assert task.status == "queued" and jobs[0].status == "queued"  # left as read
    # Among wakes queued up, the last end is the one taken; plain wakes carry none.
    queue: asyncio.Queue[object] = asyncio.Queue()
    for payload in (other, None, "running"):
        queue.put_nowait(payload)
    assert watch._last_end(None, queue) is other and queue.empty()
    assert watch._last_end("queued", queue) is None
