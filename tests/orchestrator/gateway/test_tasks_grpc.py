"""TaskService over a real gRPC socket, on SQLite and Postgres. Where a test needs a
job to run, it writes what the control plane would write straight into the store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import grpc
import pytest
from sqlalchemy import event
from sqlmodel import select

from cynode.gateway.v1 import tasks_pb2
from cynode.jobs.v1 import job_pb2
from cynode.orchestrator.events import JOBS, task_topic
from cynode.orchestrator.gateway.limits import MAX_PROMPT_BYTES
from cynode.orchestrator.store import Job, JobOutputChunk, Task, TaskAttachment, transaction
from tests.orchestrator.gatewaykit import Served, bearer, trailers, user_token


async def _err(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    return err.value


async def _md(served: Served, *, is_admin: bool = False) -> tuple[tuple[str, str], ...]:
    _, pair = await user_token(served, is_admin=is_admin)
    return bearer(pair.access_token)


async def _job(served: Served, task_id: str) -> Job:
    async with served.gateway.factory() as s:
        return (await s.exec(select(Job).where(Job.task_id == task_id))).one()


async def _set(served: Served, task_id: str, status: str, **job_fields: object) -> None:
    """What the control plane does when a job starts or ends."""
    async with transaction(served.gateway.factory) as s:
        task = await s.get(Task, task_id)
        assert task is not None
        task.status = status
        task.updated_at = datetime.now(UTC)
        s.add(task)
        job = (await s.exec(select(Job).where(Job.task_id == task_id))).one()
        job.status = status
        for key, value in job_fields.items():
            setattr(job, key, value)
        s.add(job)
    served.gateway.bus.publish(task_topic(task_id), status)


async def test_create_each_mode_stores_task_and_job(served: Served) -> None:
    md = await _md(served)
    async with served.gateway.bus.subscribe(JOBS) as woken:
        cases = [
            (tasks_pb2.CreateTaskRequest(prompt="What is 2+2?"), "prompt", True),
            (tasks_pb2.CreateTaskRequest(input_mode="script", script="echo hi\n"), "script", False),
            (
                tasks_pb2.CreateTaskRequest(
                    input_mode="commands", commands=["echo a", "echo b"], use_inference=True
                ),
                "commands",
                True,
            ),
            (tasks_pb2.CreateTaskRequest(script="#!/bin/sh\necho x"), "script", False),
        ]
        for request, mode, inference in cases:
            call = served.tasks.CreateTask(request, metadata=md)
            resp = await call
            assert resp.status == "queued" and len(resp.task_id) == 26
            assert trailers(await call.trailing_metadata())["x-http-status"] == "201"
            got = await served.tasks.FetchTask(
                tasks_pb2.FetchTaskRequest(task_id=resp.task_id), metadata=md
            )
            assert got.input_mode == mode and got.status == "queued"
            assert got.created_at.seconds > 0
            job = await _job(served, resp.task_id)
            assert job.status == "queued" and job.needs_inference is inference
            assert await asyncio.wait_for(woken.get(), 1) == job.id


async def test_task_and_its_first_job_are_one_transaction(served: Served) -> None:
    """A job row that cannot be written takes its task row with it: no task without a job."""
    md = await _md(served)
    prompt = f"atomic {datetime.now(UTC).timestamp()}"

    def refuse(*_args: object) -> None:
        raise RuntimeError("job insert refused (test)")

    event.listen(Job, "before_insert", refuse)
    try:
        err = await _err(
            served.tasks.CreateTask(tasks_pb2.CreateTaskRequest(prompt=prompt), metadata=md)
        )
    finally:
        event.remove(Job, "before_insert", refuse)
    # As on REST (500 "internal error"): the cause stays in the log.
    assert (err.code(), err.details()) == (grpc.StatusCode.INTERNAL, "internal error")
    async with served.gateway.factory() as s:
        assert (await s.exec(select(Task).where(Task.prompt == prompt))).first() is None
    # The same request goes through once jobs can be written again.
    created = await served.tasks.CreateTask(tasks_pb2.CreateTaskRequest(prompt=prompt), metadata=md)
    assert (await _job(served, created.task_id)).status == "queued"


async def test_attachments_timeout_image_stored(served: Served) -> None:
    md = await _md(served)
    resp = await served.tasks.CreateTask(
        tasks_pb2.CreateTaskRequest(
            commands=["cat data.txt"],
            timeout_seconds=30,
            image="localhost/cynode-sandbox:latest",
            attachments=[job_pb2.Attachment(name="data.txt", content=b"\x00\xffhello")],
        ),
        metadata=md,
    )
    async with served.gateway.factory() as s:
        task = await s.get(Task, resp.task_id)
        atts = list(
            await s.exec(select(TaskAttachment).where(TaskAttachment.task_id == resp.task_id))
        )
    assert task is not None and task.timeout_seconds == 30
    assert task.image == "localhost/cynode-sandbox:latest"
    assert [(a.name, a.content) for a in atts] == [("data.txt", b"\x00\xffhello")]


@pytest.mark.parametrize(
    "request_",
    [
        tasks_pb2.CreateTaskRequest(),
        tasks_pb2.CreateTaskRequest(prompt="a", script="b"),
        tasks_pb2.CreateTaskRequest(prompt="a", commands=["b"]),
        tasks_pb2.CreateTaskRequest(input_mode="script", prompt="a"),
        tasks_pb2.CreateTaskRequest(input_mode="bogus", prompt="a"),
        tasks_pb2.CreateTaskRequest(prompt="   "),
        tasks_pb2.CreateTaskRequest(prompt="a\x00b"),
        tasks_pb2.CreateTaskRequest(commands=["ok", " "]),
        tasks_pb2.CreateTaskRequest(prompt="a", timeout_seconds=-1),
        tasks_pb2.CreateTaskRequest(prompt="a", image="bad image"),
        tasks_pb2.CreateTaskRequest(prompt="a", task_name="  "),
        tasks_pb2.CreateTaskRequest(prompt="a", task_name="a/b"),
        tasks_pb2.CreateTaskRequest(prompt="a", task_name="01ARZ3NDEKTSV4RRFFQ69G5FAV"),
        tasks_pb2.CreateTaskRequest(
            prompt="a", attachments=[job_pb2.Attachment(name="../x", content=b"")]
        ),
        tasks_pb2.CreateTaskRequest(
            prompt="a",
            attachments=[job_pb2.Attachment(name="x"), job_pb2.Attachment(name="x")],
        ),
    ],
)
async def test_malformed_requests_are_invalid_argument(
    served: Served, request_: tasks_pb2.CreateTaskRequest
) -> None:
    md = await _md(served)
    err = await _err(served.tasks.CreateTask(request_, metadata=md))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()


@pytest.mark.parametrize(
    "request_",
    [
        tasks_pb2.CreateTaskRequest(prompt="x" * (MAX_PROMPT_BYTES + 1)),
        tasks_pb2.CreateTaskRequest(prompt="é" * (MAX_PROMPT_BYTES // 2 + 1)),
        tasks_pb2.CreateTaskRequest(script="x" * (256 * 1024 + 1)),
        tasks_pb2.CreateTaskRequest(commands=["x" * 40_000, "y" * 30_000]),
        tasks_pb2.CreateTaskRequest(
            prompt="a", attachments=[job_pb2.Attachment(name=f"f{i}") for i in range(17)]
        ),
        tasks_pb2.CreateTaskRequest(
            prompt="a",
            attachments=[job_pb2.Attachment(name="big", content=b"x" * (10 * 1024 * 1024 + 1))],
        ),
    ],
)
async def test_over_a_limit_is_resource_exhausted_413(
    served: Served, request_: tasks_pb2.CreateTaskRequest
) -> None:
    md = await _md(served)
    err = await _err(served.tasks.CreateTask(request_, metadata=md))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert trailers(err.trailing_metadata())["x-http-status"] == "413"


async def test_limits_are_inclusive(served: Served) -> None:
    md = await _md(served)
    resp = await served.tasks.CreateTask(
        tasks_pb2.CreateTaskRequest(
            prompt="x" * MAX_PROMPT_BYTES,
            attachments=[job_pb2.Attachment(name=f"f{i}", content=b"1") for i in range(16)],
        ),
        metadata=md,
    )
    assert resp.status == "queued"


async def test_names_unique_per_user_with_suffix_and_lookup_by_name(served: Served) -> None:
    md = await _md(served)
    other = await _md(served)
    names = []
    for _ in range(3):
        r = await served.tasks.CreateTask(
            tasks_pb2.CreateTaskRequest(prompt="p", task_name="build"), metadata=md
        )
        names.append(r.task_name)
    assert names == ["build", "build-2", "build-3"]
    r = await served.tasks.CreateTask(
        tasks_pb2.CreateTaskRequest(prompt="p", task_name="build"), metadata=other
    )
    assert r.task_name == "build"
    got = await served.tasks.GetTask(tasks_pb2.GetTaskRequest(task_id="build-2"), metadata=md)
    assert got.task.task_name == "build-2"
    # Concurrent creates with one name all succeed with distinct names.
    many = await asyncio.gather(
        *(
            served.tasks.CreateTask(
                tasks_pb2.CreateTaskRequest(prompt="p", task_name="race_1"), metadata=md
            )
            for _ in range(6)
        )
    )
    assert sorted(m.task_name for m in many) == sorted(
        ["race_1", *(f"race_1-{i}" for i in range(2, 7))]
    )


async def test_fetch_task_is_the_task_get_task_wraps_it(served: Served) -> None:
    """FetchTask (the REST route) answers the Task itself; GetTask, kept for existing
    stubs, answers the same task inside GetTaskResponse. Both by ULID and by name."""
    md = await _md(served)
    created = await served.tasks.CreateTask(
        tasks_pb2.CreateTaskRequest(input_mode="commands", commands=["true"], task_name="both"),
        metadata=md,
    )
    for key in (created.task_id, created.task_name):
        fetched = await served.tasks.FetchTask(tasks_pb2.FetchTaskRequest(task_id=key), metadata=md)
        wrapped = await served.tasks.GetTask(tasks_pb2.GetTaskRequest(task_id=key), metadata=md)
        assert isinstance(fetched, tasks_pb2.Task)
        assert isinstance(wrapped, tasks_pb2.GetTaskResponse)
        assert fetched == wrapped.task
        assert (fetched.task_id, fetched.task_name) == (created.task_id, "both")
        assert (fetched.input_mode, fetched.status) == ("commands", "queued")


async def test_users_see_only_their_own_tasks_admins_see_all(served: Served) -> None:
    alice, bob, admin = await _md(served), await _md(served), await _md(served, is_admin=True)
    t = await served.tasks.CreateTask(
        tasks_pb2.CreateTaskRequest(prompt="secret", task_name="mine"), metadata=alice
    )
    for call in (
        served.tasks.GetTask(tasks_pb2.GetTaskRequest(task_id=t.task_id), metadata=bob),
        served.tasks.GetTask(tasks_pb2.GetTaskRequest(task_id="mine"), metadata=bob),
        served.tasks.FetchTask(tasks_pb2.FetchTaskRequest(task_id=t.task_id), metadata=bob),
        served.tasks.FetchTask(tasks_pb2.FetchTaskRequest(task_id="mine"), metadata=bob),
        served.tasks.GetTaskResult(tasks_pb2.GetTaskResultRequest(task_id=t.task_id), metadata=bob),
        served.tasks.CancelTask(tasks_pb2.CancelTaskRequest(task_id=t.task_id), metadata=bob),
        served.tasks.GetTaskLogs(tasks_pb2.GetTaskLogsRequest(task_id=t.task_id), metadata=bob),
        served.tasks.GetTask(tasks_pb2.GetTaskRequest(task_id="nope"), metadata=alice),
        served.tasks.FetchTask(tasks_pb2.FetchTaskRequest(task_id="nope"), metadata=alice),
    ):
        err = await _err(call)
        assert err.code() == grpc.StatusCode.NOT_FOUND and err.details() == "no such task"
    listed = await served.tasks.ListTasks(tasks_pb2.ListTasksRequest(), metadata=bob)
    assert t.task_id not in [x.task_id for x in listed.tasks]
    got = await served.tasks.GetTask(tasks_pb2.GetTaskRequest(task_id=t.task_id), metadata=admin)
    assert got.task.task_id == t.task_id
    fetched = await served.tasks.FetchTask(
        tasks_pb2.FetchTaskRequest(task_id="mine"), metadata=alice
    )
    assert fetched.task_id == t.task_id
    # An admin finds another user's task by ULID (a name is per user, so by ULID only).
    fetched = await served.tasks.FetchTask(
        tasks_pb2.FetchTaskRequest(task_id=t.task_id), metadata=admin
    )
    assert fetched.task_id == t.task_id and fetched.user_id == got.task.user_id
    listed = await served.tasks.ListTasks(tasks_pb2.ListTasksRequest(limit=200), metadata=admin)
    assert t.task_id in [x.task_id for x in listed.tasks]
    err = await _err(served.tasks.GetTask(tasks_pb2.GetTaskRequest(), metadata=alice))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    err = await _err(served.tasks.FetchTask(tasks_pb2.FetchTaskRequest(), metadata=alice))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_every_call_needs_a_token(served: Served) -> None:
    for call in (
        served.tasks.CreateTask(tasks_pb2.CreateTaskRequest(prompt="x")),
        served.tasks.ListTasks(tasks_pb2.ListTasksRequest()),
        served.tasks.GetTask(tasks_pb2.GetTaskRequest(task_id="x")),
        served.tasks.FetchTask(tasks_pb2.FetchTaskRequest(task_id="x")),
    ):
        assert (await _err(call)).code() == grpc.StatusCode.UNAUTHENTICATED
    stream = served.tasks.WatchTask(tasks_pb2.WatchTaskRequest(task_id="x"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stream:
            pass
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_list_pages_newest_first_with_status_filter(served: Served) -> None:
    md = await _md(served)
    ids = []
    for i in range(5):
        r = await served.tasks.CreateTask(tasks_pb2.CreateTaskRequest(prompt=f"p{i}"), metadata=md)
        ids.append(r.task_id)
        await asyncio.sleep(0.002)  # distinct ULID milliseconds, so "newest" is defined
    seen: list[str] = []
    cursor = ""
    while True:
        page = await served.tasks.ListTasks(
            tasks_pb2.ListTasksRequest(limit=2, cursor=cursor), metadata=md
        )
        seen += [t.task_id for t in page.tasks]
        assert len(page.tasks) <= 2
        if not page.next_cursor:
            break
        cursor = page.next_cursor
    assert seen == list(reversed(ids))
    await _set(served, ids[1], "completed")
    done = await served.tasks.ListTasks(tasks_pb2.ListTasksRequest(status="completed"), metadata=md)
    assert [t.task_id for t in done.tasks] == [ids[1]]
    default = await served.tasks.ListTasks(tasks_pb2.ListTasksRequest(), metadata=md)
    assert len(default.tasks) == 5 and default.next_cursor == ""
    for bad in (
        tasks_pb2.ListTasksRequest(status="weird"),
        # Never a status (nothing could set it); only a CancelJob reason now.
        tasks_pb2.ListTasksRequest(status="superseded"),
        tasks_pb2.ListTasksRequest(limit=-1),
        tasks_pb2.ListTasksRequest(cursor="!!!"),
        tasks_pb2.ListTasksRequest(cursor="eyJ2IjoyfQ"),
    ):
        err = await _err(served.tasks.ListTasks(bad, metadata=md))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_result_and_logs_of_a_finished_job(served: Served) -> None:
    md = await _md(served)
    t = await served.tasks.CreateTask(tasks_pb2.CreateTaskRequest(commands=["x"]), metadata=md)
    res = await served.tasks.GetTaskResult(
        tasks_pb2.GetTaskResultRequest(task_id=t.task_id), metadata=md
    )
    assert res.status == "queued" and len(res.jobs) == 1 and res.stdout == ""
    now = datetime.now(UTC)
    await _set(
        served,
        t.task_id,
        "completed",
        exit_code=0,
        stdout=b"line 1\nline 2\n\xe2\x82",
        stderr=b"warn\n",
        stdout_truncated=True,
        started_at=now,
        ended_at=now,
        node_id="N" * 26,
    )
    res = await served.tasks.GetTaskResult(
        tasks_pb2.GetTaskResultRequest(task_id=t.task_id), metadata=md
    )
    assert res.status == "completed"
    assert res.stdout == "line 1\nline 2\n\ufffd" and res.stderr == "warn\n"
    job = res.jobs[0]
    assert job.truncated.stdout and not job.truncated.stderr and job.node_id == "N" * 26
    assert job.started_at.seconds == int(now.timestamp())
    logs = await served.tasks.GetTaskLogs(
        tasks_pb2.GetTaskLogsRequest(task_id=t.task_id), metadata=md
    )
    assert logs.stream == "stdout" and list(logs.lines) == ["line 1", "line 2", "\ufffd"]
    logs = await served.tasks.GetTaskLogs(
        tasks_pb2.GetTaskLogsRequest(task_id=t.task_id, stream="stderr"), metadata=md
    )
    assert list(logs.lines) == ["warn"]
    assert not logs.HasField("stdout") and not logs.HasField("stderr")
    logs = await served.tasks.GetTaskLogs(
        tasks_pb2.GetTaskLogsRequest(task_id=t.task_id, stream="all"), metadata=md
    )
    assert logs.stream == "all"
    assert list(logs.lines) == ["line 1", "line 2", "\ufffd", "warn"]
    assert (logs.stdout, logs.stderr) == ("line 1\nline 2\n\ufffd", "warn\n")
    err = await _err(
        served.tasks.GetTaskLogs(
            tasks_pb2.GetTaskLogsRequest(task_id=t.task_id, stream="both"), metadata=md
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_logs_of_a_running_job_come_from_chunks(served: Served) -> None:
    md = await _md(served)
    t = await served.tasks.CreateTask(tasks_pb2.CreateTaskRequest(commands=["x"]), metadata=md)
    await _set(served, t.task_id, "running")
    job = await _job(served, t.task_id)
    async with transaction(served.gateway.factory) as s:
        s.add(JobOutputChunk(job_id=job.id, attempt=0, stream="stdout", offset=0, data=b"hel"))
        s.add(JobOutputChunk(job_id=job.id, attempt=0, stream="stdout", offset=3, data=b"lo\nwor"))
        s.add(JobOutputChunk(job_id=job.id, attempt=0, stream="stdout", offset=9, data=b"ld\n"))
        s.add(JobOutputChunk(job_id=job.id, attempt=0, stream="stderr", offset=0, data=b"e\n"))
    logs = await served.tasks.GetTaskLogs(
        tasks_pb2.GetTaskLogsRequest(task_id=t.task_id), metadata=md
    )
    assert list(logs.lines) == ["hello", "world"]
    logs = await served.tasks.GetTaskLogs(
        tasks_pb2.GetTaskLogsRequest(task_id=t.task_id, stream="ALL"), metadata=md
    )
    assert list(logs.lines) == ["hello", "world", "e"]
    assert (logs.stdout, logs.stderr) == ("hello\nworld\n", "e\n")


async def test_attachment_names_are_listed_as_given(served: Served) -> None:
    md = await _md(served)
    names = ["notes/a.txt", "b.bin", "deep/er/c"]
    created = await served.tasks.CreateTask(
        tasks_pb2.CreateTaskRequest(
            commands=["ls"],
            task_name="with-files",
            attachments=[job_pb2.Attachment(name=n, content=b"1") for n in names],
        ),
        metadata=md,
    )
    assert list(created.attachments) == names
    fetched = await served.tasks.FetchTask(
        tasks_pb2.FetchTaskRequest(task_id="with-files"), metadata=md
    )
    assert list(fetched.attachments) == names
    page = await served.tasks.ListTasks(tasks_pb2.ListTasksRequest(), metadata=md)
    assert [list(t.attachments) for t in page.tasks if t.task_id == created.task_id] == [names]
    plain = await served.tasks.CreateTask(tasks_pb2.CreateTaskRequest(commands=["ls"]), metadata=md)
    assert list(plain.attachments) == []


@pytest.mark.parametrize(
    "names",
    [["/abs"], ["a//b"], ["a/./b"], ["a/../b"], ["a/"], ["a\\b"], ["x/same", "y/same"]],
)
async def test_attachment_paths_that_could_escape_or_collide_are_invalid(
    served: Served, names: list[str]
) -> None:
    md = await _md(served)
    request = tasks_pb2.CreateTaskRequest(
        prompt="a", attachments=[job_pb2.Attachment(name=n) for n in names]
    )
    err = await _err(served.tasks.CreateTask(request, metadata=md))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()


async def test_cancel_queued_running_and_terminal(served: Served) -> None:
    md = await _md(served)
    q = await served.tasks.CreateTask(tasks_pb2.CreateTaskRequest(prompt="q"), metadata=md)
    resp = await served.tasks.CancelTask(
        tasks_pb2.CancelTaskRequest(task_id=q.task_id), metadata=md
    )
    assert resp.canceled and resp.task_id == q.task_id
    job = await _job(served, q.task_id)
    assert job.status == "canceled" and not job.cancel_requested and job.ended_at is not None

    r = await served.tasks.CreateTask(tasks_pb2.CreateTaskRequest(prompt="r"), metadata=md)
    await _set(served, r.task_id, "running", node_id="N" * 26)
    async with served.gateway.bus.subscribe(JOBS) as woken:
        await served.tasks.CancelTask(tasks_pb2.CancelTaskRequest(task_id=r.task_id), metadata=md)
        assert await asyncio.wait_for(woken.get(), 1) == {"cancel": r.task_id}
    job = await _job(served, r.task_id)
    assert job.status == "canceled" and job.cancel_requested
    got = await served.tasks.GetTask(tasks_pb2.GetTaskRequest(task_id=r.task_id), metadata=md)
    assert got.task.status == "canceled" and got.task.reason == "canceled"

    err = await _err(
        served.tasks.CancelTask(tasks_pb2.CancelTaskRequest(task_id=r.task_id), metadata=md)
    )
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert trailers(err.trailing_metadata())["x-http-status"] == "409"


async def test_watch_streams_status_and_output_until_terminal(served: Served) -> None:
    md = await _md(served)
    t = await served.tasks.CreateTask(tasks_pb2.CreateTaskRequest(commands=["x"]), metadata=md)
    stream = served.tasks.WatchTask(tasks_pb2.WatchTaskRequest(task_id=t.task_id), metadata=md)
    events: list[tasks_pb2.WatchTaskResponse] = []

    async def consume() -> None:
        async for ev in stream:
            events.append(ev)

    consumer = asyncio.create_task(consume())

    async def until(n: int) -> None:
        for _ in range(500):
            if len(events) >= n:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"only {len(events)} events: {events}")

    await until(1)
    assert events[0].status == "queued" and not events[0].terminal
    await _set(served, t.task_id, "running")
    await until(2)
    assert events[1].status == "running"
    job = await _job(served, t.task_id)
    async with transaction(served.gateway.factory) as s:
        # A euro sign split over two chunks must come out whole.
        s.add(JobOutputChunk(job_id=job.id, attempt=0, stream="stdout", offset=0, data=b"a\xe2"))
    served.gateway.bus.publish(task_topic(t.task_id))
    await until(3)
    async with transaction(served.gateway.factory) as s:
        s.add(JobOutputChunk(job_id=job.id, attempt=0, stream="stdout", offset=2, data=b"\x82\xac"))
    served.gateway.bus.publish(task_topic(t.task_id))
    await until(4)
    # Completion written without a wake-up (as by another replica): the poll finds it.
    async with transaction(served.gateway.factory) as s:
        task = await s.get(Task, t.task_id)
        assert task is not None
        task.status = "completed"
        s.add(task)
        j = await s.get(Job, job.id)
        assert j is not None
        j.status, j.stdout, j.stderr = "completed", "a€ tail".encode(), b"oops"
        s.add(j)
    await asyncio.wait_for(consumer, 5)
    chunks = [(e.stream, e.chunk) for e in events if e.stream]
    assert chunks == [("stdout", "a"), ("stdout", "€"), ("stdout", " tail"), ("stderr", "oops")]
    assert events[-1].terminal and events[-1].status == "completed"
    assert sum(e.terminal for e in events) == 1
    # Watching a finished task answers its status at once, marked terminal.
    again = [
        e
        async for e in served.tasks.WatchTask(
            tasks_pb2.WatchTaskRequest(task_id=t.task_id), metadata=md
        )
    ]
    assert len(again) == 1 and again[0].terminal and again[0].status == "completed"
    assert not again[0].HasField("task_result")  # only when asked for
    # Asked for, the terminal event carries what GetTaskResult answers.
    with_result = [
        e
        async for e in served.tasks.WatchTask(
            tasks_pb2.WatchTaskRequest(task_id=t.task_id, include_result=True), metadata=md
        )
    ]
    result = await served.tasks.GetTaskResult(
        tasks_pb2.GetTaskResultRequest(task_id=t.task_id), metadata=md
    )
    assert len(with_result) == 1 and with_result[0].terminal
    assert with_result[0].task_result == result
    assert result.stdout == "a€ tail" and result.stderr == "oops"
    err = stream = served.tasks.WatchTask(tasks_pb2.WatchTaskRequest(task_id="nope"), metadata=md)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        async for _ in err:
            pass
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
