"""cynode.gateway.v1.TaskService."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from cynode.gateway.v1 import tasks_pb2, tasks_pb2_grpc
from cynode.orchestrator.artifacts import catalog
from cynode.orchestrator.artifacts.blobs import NOT_STORED, FsBlobStore, read_blob
from cynode.orchestrator.artifacts.retention import remove_unreferenced
from cynode.orchestrator.auth import Authenticator, Principal
from cynode.orchestrator.errors import RETRY_AFTER_KEY, Context, abort, set_http_status
from cynode.orchestrator.gateway.tasks import TaskBook, TaskLive, TaskNotFound, TaskTerminal
from cynode.orchestrator.gateway.validation import Invalid, TooLarge, validate_create
from cynode.orchestrator.gateway.views import decode_output, job_view, task_message, timestamp
from cynode.orchestrator.gateway.watch import watch_task
from cynode.orchestrator.lifecycle import TERMINAL
from cynode.orchestrator.quotas import OverQuota
from cynode.orchestrator.store import Job, Task

NOT_FOUND = "no such task"


class TaskServicer(tasks_pb2_grpc.TaskServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        book: TaskBook,
        authenticator: Authenticator,
        *,
        watch_poll_interval: float = 1.0,
        blobs: FsBlobStore | None = None,
    ) -> None:
        self._book = book
        self._auth = authenticator
        self._poll = watch_poll_interval
        self._blobs = blobs

    async def _fail(self, context: Context, exc: Exception) -> None:
        """Aborts for the errors task logic raises; returns for anything else."""
        if isinstance(exc, TooLarge):
            await abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc), http_status=413)
        if isinstance(exc, Invalid):
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if isinstance(exc, TaskNotFound):
            await abort(context, grpc.StatusCode.NOT_FOUND, NOT_FOUND)
        if isinstance(exc, OverQuota):
            retry = exc.retry_after
            await abort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                str(exc),
                http_status=429,
                trailing=((RETRY_AFTER_KEY, str(retry)),) if retry is not None else (),
            )
        if isinstance(exc, (TaskTerminal, TaskLive)):
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc), http_status=409)

    async def _principal(self, context: Context) -> Principal:
        return await self._auth.authenticate(context)

    async def CreateTask(
        self, request: tasks_pb2.CreateTaskRequest, context: Context
    ) -> tasks_pb2.CreateTaskResponse:
        principal = await self._principal(context)
        try:
            new = validate_create(request)
            task = await self._book.create(principal, new)
        except (Invalid, TooLarge, OverQuota) as exc:
            await self._fail(context, exc)
            raise
        set_http_status(context, 201)
        # Stored as given, in this order (what attachment_names reads back), so the
        # answer needs no second read of the store.
        return tasks_pb2.CreateTaskResponse(
            task_id=task.id,
            task_name=task.name,
            status=task.status,
            attachments=[name for name, _ in new.attachments],
        )

    async def _find(self, task_id: str, context: Context) -> tasks_pb2.Task:
        """The caller's task by ULID or name (any task for an admin); NOT_FOUND otherwise."""
        principal = await self._principal(context)
        try:
            task = await self._book.find(principal, task_id)
        except (Invalid, TaskNotFound) as exc:
            await self._fail(context, exc)
            raise
        names = await self._book.attachment_names([task.id])
        return task_message(task, names[task.id])

    async def FetchTask(
        self, request: tasks_pb2.FetchTaskRequest, context: Context
    ) -> tasks_pb2.Task:
        # The REST route GET /v1/tasks/{task_id}: the task itself (SPEC §2).
        return await self._find(request.task_id, context)

    async def GetTask(
        self, request: tasks_pb2.GetTaskRequest, context: Context
    ) -> tasks_pb2.GetTaskResponse:
        # gRPC only, kept for existing stubs: the same task, wrapped.
        return tasks_pb2.GetTaskResponse(task=await self._find(request.task_id, context))

    async def ListTasks(
        self, request: tasks_pb2.ListTasksRequest, context: Context
    ) -> tasks_pb2.ListTasksResponse:
        principal = await self._principal(context)
        try:
            page = await self._book.page(principal, request.status, request.limit, request.cursor)
        except Invalid as exc:
            await self._fail(context, exc)
            raise
        names = await self._book.attachment_names([t.id for t in page.tasks])
        return tasks_pb2.ListTasksResponse(
            tasks=[task_message(t, names[t.id]) for t in page.tasks],
            next_cursor=page.next_cursor,
        )

    async def GetTaskResult(
        self, request: tasks_pb2.GetTaskResultRequest, context: Context
    ) -> tasks_pb2.GetTaskResultResponse:
        principal = await self._principal(context)
        # One session for the task, its jobs and the artifact listing: this is read right
        # after the watch's terminal event on the usual path, so it is kept to one.
        async with self._book.factory() as session:
            try:
                task = await self._book.find_in(session, principal, request.task_id)
            except (Invalid, TaskNotFound) as exc:
                await self._fail(context, exc)
                raise
            jobs = await self._book.jobs_of(session, task.id)
            return self._result_message(task, jobs, await catalog.listing_in(session, task, jobs))

    @staticmethod
    def _result_message(
        task: Task, jobs: list[Job], found: catalog.Listing
    ) -> tasks_pb2.GetTaskResultResponse:
        response = tasks_pb2.GetTaskResultResponse(
            task_id=task.id,
            task_name=task.name,
            status=task.status,
            jobs=[job_view(j) for j in jobs],
            reason=task.reason or "",
        )
        if jobs and task.status in TERMINAL:
            response.stdout = decode_output(jobs[-1].stdout)
            response.stderr = decode_output(jobs[-1].stderr)
        response.artifacts_complete = found.complete
        response.artifact_count = len(found.artifacts)
        return response

    async def DeleteTask(
        self, request: tasks_pb2.DeleteTaskRequest, context: Context
    ) -> tasks_pb2.DeleteTaskResponse:
        principal = await self._principal(context)
        try:
            task, sha256s = await self._book.delete(principal, request.task_id)
        except (Invalid, TaskNotFound, TaskLive) as exc:
            await self._fail(context, exc)
            raise
        if self._blobs is not None:
            await remove_unreferenced(self._book.factory, self._blobs, sha256s)
        return tasks_pb2.DeleteTaskResponse(task_id=task.id, deleted=True)

    async def ListTaskArtifacts(
        self, request: tasks_pb2.ListTaskArtifactsRequest, context: Context
    ) -> tasks_pb2.ListTaskArtifactsResponse:
        principal = await self._principal(context)
        try:
            found = await catalog.wait_complete(
                self._book, principal, request.task_id, request.wait_seconds, self._poll
            )
        except (Invalid, TaskNotFound) as exc:
            await self._fail(context, exc)
            raise
        response = tasks_pb2.ListTaskArtifactsResponse(
            task_id=found.task.id,
            task_name=found.task.name,
            artifacts=[catalog.artifact_message(a) for a in found.artifacts],
            complete=found.complete,
        )
        if found.found is not None and found.found.truncated:
            response.truncated = True
            response.truncated_reason = found.found.truncated_reason or ""
        return response

    async def DownloadTaskArtifact(
        self, request: tasks_pb2.DownloadTaskArtifactRequest, context: Context
    ) -> AsyncIterator[tasks_pb2.DownloadTaskArtifactResponse]:
        principal = await self._principal(context)
        try:
            _, row = await catalog.find(self._book, principal, request.task_id, request.artifact_id)
        except (Invalid, TaskNotFound) as exc:
            await self._fail(context, exc)
            raise
        except catalog.ArtifactNotFound:
            await abort(context, grpc.StatusCode.NOT_FOUND, "no such artifact")
        blobs = self._blobs
        if blobs is None or row.stored_at is None:
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION, NOT_STORED, http_status=409)
        if request.offset < 0 or request.length < 0 or request.offset > row.size_bytes:
            await abort(context, grpc.StatusCode.OUT_OF_RANGE, "offset or length out of range")
        end = row.size_bytes
        if request.length:
            end = min(end, request.offset + request.length)
        offset = request.offset
        yield tasks_pb2.DownloadTaskArtifactResponse(
            artifact=catalog.artifact_message(row), offset=offset
        )
        async for block in read_blob(blobs, row.sha256, offset, end):
            yield tasks_pb2.DownloadTaskArtifactResponse(data=block, offset=offset)
            offset += len(block)

    async def CancelTask(
        self, request: tasks_pb2.CancelTaskRequest, context: Context
    ) -> tasks_pb2.CancelTaskResponse:
        principal = await self._principal(context)
        try:
            task = await self._book.cancel(principal, request.task_id)
        except (Invalid, TaskNotFound, TaskTerminal) as exc:
            await self._fail(context, exc)
            raise
        return tasks_pb2.CancelTaskResponse(task_id=task.id, canceled=True)

    async def GetTaskLogs(
        self, request: tasks_pb2.GetTaskLogsRequest, context: Context
    ) -> tasks_pb2.GetTaskLogsResponse:
        principal = await self._principal(context)
        try:
            logs = await self._book.logs(principal, request.task_id, request.stream)
        except (Invalid, TaskNotFound) as exc:
            await self._fail(context, exc)
            raise
        response = tasks_pb2.GetTaskLogsResponse(
            task_id=logs.task.id, task_name=logs.task.name, stream=logs.stream, lines=logs.lines
        )
        if logs.texts is not None:
            response.stdout = logs.texts["stdout"]
            response.stderr = logs.texts["stderr"]
        return response

    async def WatchTask(
        self, request: tasks_pb2.WatchTaskRequest, context: Context
    ) -> AsyncIterator[tasks_pb2.WatchTaskResponse]:
        principal = await self._principal(context)
        try:
            async for event in watch_task(
                self._book, principal, request.task_id, self._poll, request.include_result
            ):
                response = tasks_pb2.WatchTaskResponse(
                    task_id=event.task_id,
                    status=event.status,
                    stream=event.stream,
                    chunk=event.chunk,
                    terminal=event.terminal,
                    at=timestamp(event.at),
                )
                if event.terminal and event.task is not None and event.listing is not None:
                    # Built from the read that saw the terminal status (its listing
                    # too): the answer GetTaskResult gives from then on.
                    result = self._result_message(event.task, list(event.jobs), event.listing)
                    response.task_result.CopyFrom(result)
                yield response
        except (Invalid, TaskNotFound) as exc:
            await self._fail(context, exc)
            raise
