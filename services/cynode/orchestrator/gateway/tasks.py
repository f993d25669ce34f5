"""Task logic behind TaskService: create, find, list, result, cancel, logs.

Visibility: a user sees their own tasks, an admin sees all; a task the caller may not
see is answered exactly like one that does not exist.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from cynode.orchestrator import lifecycle
from cynode.orchestrator.auth import Principal
from cynode.orchestrator.events import JOBS, EventBus, task_topic
from cynode.orchestrator.gateway import limits as L
from cynode.orchestrator.gateway.cursor import decode_cursor, encode_cursor
from cynode.orchestrator.gateway.naming import pick_name
from cynode.orchestrator.gateway.validation import Invalid, NewTask
from cynode.orchestrator.gateway.views import assemble_chunks, decode_output
from cynode.orchestrator.quotas import QuotaDefaults, admit
from cynode.orchestrator.store import (
    Job,
    JobOutputChunk,
    Task,
    TaskAttachment,
    transaction,
    utcnow,
)

log = logging.getLogger(__name__)

NAME_ATTEMPTS = 20


class TaskNotFound(LookupError):
    pass


class TaskLive(Exception):
    """The task has not ended; it cannot be deleted (cancel it first)."""

    def __init__(self, status: str) -> None:
        super().__init__(f"task is {status}; cancel it before deleting it")
        self.status = status


class TaskTerminal(Exception):
    """The task has already ended; it cannot be canceled."""

    def __init__(self, status: str) -> None:
        super().__init__(f"task is already {status}")
        self.status = status


STREAMS = ("stdout", "stderr")
ALL_STREAMS = "all"


@dataclass(frozen=True)
class TaskLogs:
    task: Task
    stream: str
    lines: list[str]
    # Each stream's whole text, for stream "all" only.
    texts: dict[str, str] | None


@dataclass(frozen=True)
class TaskPage:
    tasks: list[Task]
    next_cursor: str


class TaskBook:
    def __init__(
        self,
        factory: async_sessionmaker[AsyncSession],
        bus: EventBus,
        quotas: QuotaDefaults | None = None,
    ) -> None:
        self.factory = factory
        self.bus = bus
        self.quotas = quotas or QuotaDefaults()

    async def create(self, principal: Principal, new: NewTask) -> Task:
        """Stores the task and its first job in one transaction and wakes the scheduler."""
        for _ in range(NAME_ATTEMPTS):
            try:
                task, job = await self._insert(principal, new)
            except IntegrityError:
                if new.name is None:
                    raise
                log.debug("task name taken concurrently; picking the next one")
                continue
            self.bus.publish(JOBS, job.id)
            self.bus.publish(task_topic(task.id), task.status)
            return task
        raise RuntimeError("could not find a free task name")

    async def _insert(self, principal: Principal, new: NewTask) -> tuple[Task, Job]:
        async with transaction(self.factory) as session:
            # First: the user's row is then locked (Postgres) for the rest of the create.
            conn = await session.connection()
            turn = await lifecycle.take_turns(conn, principal.user_id, 1)
            timeout = await admit(conn, principal.user_id, turn, new.timeout_seconds, self.quotas)
            name = await pick_name(session, principal.user_id, new.name) if new.name else None
            now = utcnow()
            task = lifecycle.queued_task(
                now,
                user_id=principal.user_id,
                name=name,
                input_mode=new.input_mode,
                prompt=new.prompt,
                script=new.script,
                commands=new.commands,
                use_inference=new.use_inference,
                timeout_seconds=timeout,
                image=new.image,
            )
            session.add(task)
            await session.flush()
            job = lifecycle.first_job(task, new.needs_inference, now, turn.first)
            session.add(job)
            for att_name, content in new.attachments:
                session.add(TaskAttachment(task_id=task.id, name=att_name, content=content))
            await session.flush()
        return task, job

    async def find_in(self, session: AsyncSession, principal: Principal, ref: str) -> Task:
        if not ref:
            raise Invalid("task_id is required (a task id or a task name)")
        if "\x00" in ref:
            # No id or name holds one, and Postgres refuses it in a text parameter.
            raise TaskNotFound(ref)
        task = await session.get(Task, ref) if len(ref) == 26 else None
        if task is None and len(ref) == 26:
            task = await session.get(Task, ref.upper())
        if task is not None and (principal.is_admin or task.user_id == principal.user_id):
            return task
        by_name = await session.exec(
            select(Task).where(Task.user_id == principal.user_id, Task.name == ref)
        )
        task = by_name.first()
        if task is None:
            raise TaskNotFound(ref)
        return task

    async def find(self, principal: Principal, ref: str) -> Task:
        async with self.factory() as session:
            return await self.find_in(session, principal, ref)

    async def page(self, principal: Principal, status: str, limit: int, cursor: str) -> TaskPage:
        status = status.strip().lower()
        if status and status not in lifecycle.STATUSES:
            raise Invalid(f"status must be one of {', '.join(sorted(lifecycle.STATUSES))}")
        if limit < 0:
            raise Invalid("limit must not be negative")
        limit = min(limit or L.DEFAULT_LIST_LIMIT, L.MAX_LIST_LIMIT)
        query = select(Task)
        if not principal.is_admin:
            query = query.where(Task.user_id == principal.user_id)
        if status:
            query = query.where(Task.status == status)
        if cursor:
            query = query.where(col(Task.id) < decode_cursor(cursor))
        query = query.order_by(col(Task.id).desc()).limit(limit + 1)
        async with self.factory() as session:
            rows = list(await session.exec(query))
        more = len(rows) > limit
        rows = rows[:limit]
        return TaskPage(rows, encode_cursor(rows[-1].id) if more else "")

    async def jobs_of(self, session: AsyncSession, task_id: str) -> list[Job]:
        rows = await session.exec(
            select(Job).where(Job.task_id == task_id).order_by(col(Job.created_at), col(Job.id))
        )
        return list(rows)

    async def cancel(self, principal: Principal, ref: str) -> Task:
        """Queued jobs are canceled outright; jobs a node holds are marked canceled with
        `cancel_requested` so the control plane tells the node to stop the container."""
        now = utcnow()
        async with transaction(self.factory) as session:
            task = await self.find_in(session, principal, ref)
            outcome = await lifecycle.cancel_task(await session.connection(), task.id, now)
            await session.refresh(task)
            if not outcome.done:
                raise TaskTerminal(task.status)
        if outcome.stop_requested:
            self.bus.publish(JOBS, {"cancel": task.id})
        self.bus.publish(task_topic(task.id), lifecycle.Status.CANCELED)
        return task

    async def delete(self, principal: Principal, ref: str) -> tuple[Task, frozenset[str]]:
        """Removes an ended task and everything of it (SPEC §2.12); the SHA-256s of its
        artifacts, whose blobs the caller removes once nothing else names them."""
        async with transaction(self.factory) as session:
            task = await self.find_in(session, principal, ref)
            outcome = await lifecycle.delete_task(await session.connection(), task.id)
            if not outcome.done:
                raise TaskLive(outcome.status)
        self.bus.publish(task_topic(task.id))
        return task, outcome.sha256s

    async def attachment_names(self, task_ids: list[str]) -> dict[str, list[str]]:
        """Each task's attachment names as given, in the order they were given."""
        names: dict[str, list[str]] = {task_id: [] for task_id in task_ids}
        if not task_ids:
            return names
        async with self.factory() as session:
            rows = await session.exec(
                select(TaskAttachment.task_id, TaskAttachment.name)
                .where(col(TaskAttachment.task_id).in_(task_ids))
                .order_by(col(TaskAttachment.id))
            )
            for task_id, name in rows:
                names[task_id].append(name)
        return names

    async def logs(self, principal: Principal, ref: str, stream: str) -> TaskLogs:
        """The last job's output: one stream (stdout when none is named), or both."""
        stream = stream.strip().lower() or "stdout"
        if stream not in (*STREAMS, ALL_STREAMS):
            raise Invalid("stream must be stdout, stderr or all")
        wanted = STREAMS if stream == ALL_STREAMS else (stream,)
        texts = dict.fromkeys(wanted, "")
        async with self.factory() as session:
            task = await self.find_in(session, principal, ref)
            jobs = await self.jobs_of(session, task.id)
            if jobs:
                for name in wanted:
                    texts[name] = decode_output(await self._output(session, jobs[-1], name))
        lines = [line for name in wanted for line in texts[name].splitlines()]
        return TaskLogs(task, stream, lines, texts if stream == ALL_STREAMS else None)

    async def _output(self, session: AsyncSession, job: Job, stream: str) -> bytes:
        data: bytes = job.stdout if stream == "stdout" else job.stderr
        if data or job.status in lifecycle.TERMINAL:
            return data
        # While the job runs, its current attempt's streamed chunks are the output so far.
        chunks = await session.exec(
            select(JobOutputChunk).where(
                JobOutputChunk.job_id == job.id,
                JobOutputChunk.attempt == job.attempt,
                JobOutputChunk.stream == stream,
            )
        )
        data, _ = assemble_chunks(chunks)
        return data
