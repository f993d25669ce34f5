"""Birth: a task and its first job, both queued."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from cynode.orchestrator.lifecycle.fair import take_turns
from cynode.orchestrator.lifecycle.status import Status
from cynode.orchestrator.store.models import Job, Task
from cynode.orchestrator.store.tables import JOBS, TASKS, chunked


def queued_task(now: datetime, **fields: Any) -> Task:
    """A new task (its columns from `fields`), queued, made at `now`."""
    return Task(status=Status.QUEUED, created_at=now, updated_at=now, **fields)


def first_job(task: Task, needs_inference: bool, now: datetime, fair_key: float = 0.0) -> Job:
    """The task's first job, queued with it, at `fair_key` in the claim order (a key
    from `fair.take_turns`)."""
    return Job(
        task_id=task.id,
        status=Status.QUEUED,
        needs_inference=needs_inference,
        fair_key=fair_key,
        created_at=now,
        updated_at=now,
    )


async def enqueue_many(
    conn: AsyncConnection,
    tasks: Sequence[Mapping[str, Any]],
    jobs: Sequence[Mapping[str, Any]],
) -> None:
    """Inserts many tasks and their first jobs (full rows but for the status and the
    fair key), queued, in the caller's transaction: the fast path of tests and
    benchmarks that queue thousands at once. `jobs[i]` belongs to `tasks[i]`; each
    user's jobs take their fair keys in the order given."""
    by_user: dict[str, list[int]] = defaultdict(list)
    for i, task in enumerate(tasks):
        by_user[task["user_id"]].append(i)
    keys = [0.0] * len(jobs)
    for user_id, rows in by_user.items():
        for i, key in zip(
            rows, (await take_turns(conn, user_id, len(rows))).keys(len(rows)), strict=True
        ):
            keys[i] = key
    jobs = [{**j, "fair_key": k} for j, k in zip(jobs, keys, strict=True)]
    for part in chunked([{**t, "status": Status.QUEUED} for t in tasks], 1000):
        await conn.execute(TASKS.insert(), part)
    for part in chunked([{**j, "status": Status.QUEUED} for j in jobs], 1000):
        await conn.execute(JOBS.insert(), part)
