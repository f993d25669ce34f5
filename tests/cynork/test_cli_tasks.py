"""task list/get/result/watch/logs/cancel in both output modes, with their exit codes."""

from __future__ import annotations

import json

import pytest

from cynork._http import MockTransport, Request, Response
from tests.cynork.conftest import Cy, lines
from tests.cynork.fake_gateway import problem


@pytest.fixture
def logged_in(cy: Cy) -> Cy:
    cy.login()
    return cy


def test_list_prints_one_line_per_task_newest_first(logged_in: Cy) -> None:
    first = logged_in.gw.add_task(status="completed", name="first")
    second = logged_in.gw.add_task(status="running")
    result = logged_in("task", "list")
    assert result.exit_code == 0
    out = lines(result.stdout)
    assert len(out) == 2
    assert out[0].startswith(f"task_id={second} status=running input_mode=prompt created_at=")
    assert out[1].startswith(f"task_id={first} task_name=first status=completed")


def test_list_filters_and_pages(logged_in: Cy) -> None:
    for _ in range(3):
        logged_in.gw.add_task(status="queued")
    logged_in.gw.add_task(status="failed")
    page = logged_in("task", "list", "--status", "queued", "-l", "2")
    assert lines(page.stdout)[-1] == "next_cursor=2"
    assert len(lines(page.stdout)) == 3
    rest = logged_in("task", "list", "--status", "queued", "-l", "2", "--cursor", "2")
    assert len(lines(rest.stdout)) == 1
    assert "next_cursor" not in rest.stdout


def test_list_offset_walks_the_cursor_pages(logged_in: Cy) -> None:
    ids = [logged_in.gw.add_task() for _ in range(5)]
    newest_first = list(reversed(ids))
    page = logged_in("task", "list", "--offset", "2", "-l", "2")
    assert page.exit_code == 0, page.output
    assert [line.split()[0] for line in lines(page.stdout)] == [
        f"task_id={newest_first[2]}",
        f"task_id={newest_first[3]}",
        "next_cursor=4",
    ]
    assert [q for q in logged_in.gw.requests if q[1] == "/v1/tasks"] == [("GET", "/v1/tasks")] * 2
    # Past the end: nothing, and no cursor.
    assert logged_in("task", "list", "--offset", "9").stdout == ""
    body = json.loads(logged_in("-o", "json", "task", "list", "--offset", "5").stdout)
    assert body == {"tasks": [], "next_cursor": ""}
    assert logged_in("task", "list", "--offset", "-1").exit_code == 2


def test_list_offset_beyond_one_gateway_page(logged_in: Cy) -> None:
    ids = [logged_in.gw.add_task() for _ in range(203)]
    logged_in.gw.requests.clear()
    page = logged_in("-o", "json", "task", "list", "--offset", "201")
    tasks = json.loads(page.stdout)["tasks"]
    assert [t["task_id"] for t in tasks] == [ids[1], ids[0]]
    # 200 skipped, then 1, then the page itself.
    assert len(logged_in.gw.requests) == 3


def test_list_json(logged_in: Cy) -> None:
    logged_in.gw.add_task()
    body = json.loads(logged_in("task", "list", "-o", "json").stdout)
    assert set(body) == {"tasks", "next_cursor"}
    assert body["tasks"][0]["status"] == "queued"


def test_list_rejects_bad_limit_and_status(logged_in: Cy) -> None:
    assert logged_in("task", "list", "-l", "0").exit_code == 2
    assert logged_in("task", "list", "--status", "sleeping").exit_code == 2
    assert logged_in.gw.requests == []


def test_get_by_id_and_name(logged_in: Cy) -> None:
    task_id = logged_in.gw.add_task(status="running", name="my task")
    by_id = logged_in("task", "get", task_id)
    assert by_id.exit_code == 0
    assert by_id.stdout.startswith(f'task_id={task_id} task_name="my task" status=running')
    by_name = logged_in("-o", "json", "task", "get", "my task")
    assert json.loads(by_name.stdout)["task_id"] == task_id
    assert logged_in.gw.paths()[-1] == "/v1/tasks/my%20task"


def test_get_missing_task_exits_4(logged_in: Cy) -> None:
    result = logged_in("task", "get", "01HNOPE")
    assert result.exit_code == 4
    assert result.stderr == "cynork: task 01HNOPE not found\n"


def test_result_without_wait_shows_status_only(logged_in: Cy) -> None:
    logged_in.gw.polls_to_finish = 5
    task_id = logged_in.gw.add_task()
    result = logged_in("task", "result", task_id)
    assert result.stdout == f"task_id={task_id} status=running\n"


def test_result_wait_prints_stdout_and_stderr(logged_in: Cy) -> None:
    logged_in.gw.stderr = "oops\n"
    task_id = logged_in.gw.add_task()
    result = logged_in("task", "result", "-w", task_id)
    assert result.exit_code == 0
    assert lines(result.stdout) == [f"task_id={task_id} status=completed", "hello from the sandbox"]
    assert "oops" in result.stderr
    body = json.loads(logged_in("task", "result", task_id, "-o", "json").stdout)
    assert body["stdout"] == "hello from the sandbox\n"
    assert body["stderr"] == "oops\n"


def test_wait_spinner_on_a_terminal(logged_in: Cy) -> None:
    logged_in.seams.stderr_tty = True
    task_id = logged_in.gw.add_task()
    result = logged_in("task", "result", "--wait", task_id)
    assert result.exit_code == 0
    assert f"task {task_id}: running" in result.stderr
    assert "\r\x1b[K" in result.stderr
    assert result.stderr.endswith("\r\x1b[K")  # the line is wiped before the result
    assert logged_in.sleeps == []
    assert logged_in.gw.requests == [("GET", f"/v1/tasks/{task_id}/watch")]


def test_wait_follows_the_watch_stream_and_never_polls(logged_in: Cy) -> None:
    logged_in.gw.polls_to_finish = 1000  # polling the result would never see it end
    task_id = logged_in.gw.add_task()
    result = logged_in("task", "result", "-w", task_id)
    assert result.exit_code == 0, result.output
    assert lines(result.stdout)[0] == f"task_id={task_id} status=completed"
    # The result rides the terminal event; with an older gateway it is read once.
    assert [path for _, path in logged_in.gw.requests].count(f"/v1/tasks/{task_id}/result") == 0
    logged_in.gw.watch_sends_result = False
    logged_in.gw.requests.clear()
    again = logged_in("task", "result", "-w", task_id)
    assert lines(again.stdout)[0] == f"task_id={task_id} status=completed"
    assert [path for _, path in logged_in.gw.requests].count(f"/v1/tasks/{task_id}/result") == 1


def _stream(*events: dict[str, object]) -> tuple[int, dict[str, str], bytes]:
    body = "".join(json.dumps(e) + "\n" for e in events).encode()
    return 200, {"content-type": "application/x-ndjson"}, body


def test_wait_reopens_a_watch_stream_cut_before_the_end(logged_in: Cy) -> None:
    task_id = logged_in.gw.add_task()
    watch = ("GET", f"/v1/tasks/{task_id}/watch")
    logged_in.gw.inject[watch] = _stream({"task_id": task_id, "status": "running"})

    def reopen(seconds: float) -> None:
        logged_in.sleeps.append(seconds)
        del logged_in.gw.inject[watch]  # the next stream is the fake's whole one

    logged_in.seams.sleep = reopen
    result = logged_in("task", "result", "-w", task_id)
    assert result.exit_code == 0, result.output
    assert lines(result.stdout)[0] == f"task_id={task_id} status=completed"
    assert logged_in.sleeps == [1.0]
    assert logged_in.gw.requests.count(watch) == 2


def test_wait_on_a_terminal_reports_an_error_from_the_stream(logged_in: Cy) -> None:
    logged_in.seams.stderr_tty = True
    task_id = logged_in.gw.add_task()
    logged_in.gw.inject[("GET", f"/v1/tasks/{task_id}/watch")] = _stream(
        {"error": {"status": 404, "title": "Not Found", "detail": "task gone"}}
    )
    result = logged_in("task", "result", "-w", task_id)
    assert result.exit_code == 4, result.output
    assert result.stderr.endswith(f"cynork: task {task_id} not found\n")
    assert "Traceback" not in result.output


def test_ctrl_c_while_waiting_exits_130(logged_in: Cy) -> None:
    def interrupt(_: float) -> None:
        raise KeyboardInterrupt

    logged_in.seams.sleep = interrupt
    task_id = logged_in.gw.add_task()
    # A stream that ends early: the wait pauses before opening it again, and Ctrl-C
    # lands in that pause.
    logged_in.gw.inject[("GET", f"/v1/tasks/{task_id}/watch")] = _stream(
        {"task_id": task_id, "status": "running"}
    )
    result = logged_in("task", "result", "-w", task_id)
    assert result.exit_code == 130
    assert f"interrupted; task {task_id} keeps running" in result.stderr


def test_watch_appends_lines_without_clear(logged_in: Cy) -> None:
    logged_in.gw.polls_to_finish = 3
    task_id = logged_in.gw.add_task()
    assert logged_in("task", "watch", task_id, "-n", "0.5").exit_code == 2
    result = logged_in("task", "watch", task_id, "-n", "1.5", "--no-clear")
    assert result.exit_code == 0
    assert lines(result.stdout) == [
        f"task_id={task_id} status=running",
        f"task_id={task_id} status=completed",
        "hello from the sandbox",
    ]
    assert logged_in.sleeps == [1.5, 1.5]
    assert "\x1b[2J" not in result.stdout


def test_watch_redraws_on_a_terminal(logged_in: Cy) -> None:
    logged_in.seams.stdout_tty = True
    task_id = logged_in.gw.add_task()
    result = logged_in("task", "watch", task_id)
    assert result.stdout.count("\x1b[H\x1b[2J") == 2
    assert f"Every 2s: cynork task watch {task_id}" in result.stdout
    assert result.stdout.rstrip().endswith("hello from the sandbox")
    assert logged_in.sleeps == [2.0]
    # --no-color: no escape sequences, so no redraw either.
    plain = logged_in("--no-color", "task", "watch", logged_in.gw.add_task())
    assert "\x1b" not in plain.stdout and plain.stdout.endswith("hello from the sandbox\n")


def test_watch_json_prints_changes(logged_in: Cy) -> None:
    task_id = logged_in.gw.add_task()
    result = logged_in("-o", "json", "task", "watch", task_id)
    events = [json.loads(line) for line in lines(result.stdout)]
    assert [e["status"] for e in events] == ["running", "completed"]


def test_watch_ctrl_c(logged_in: Cy) -> None:
    def interrupt(_: float) -> None:
        raise KeyboardInterrupt

    logged_in.seams.sleep = interrupt
    result = logged_in("task", "watch", logged_in.gw.add_task())
    assert result.exit_code == 130


def test_watch_missing_task(logged_in: Cy) -> None:
    assert logged_in("task", "watch", "nope").exit_code == 4


def test_logs_lines_and_stream(logged_in: Cy) -> None:
    logged_in.gw.stdout = "one\ntwo\n"
    logged_in.gw.stderr = "err\n"
    task_id = logged_in.gw.add_task()
    both = logged_in("task", "logs", task_id)
    assert (both.stdout, both.stderr) == ("one\ntwo\n", "err\n")
    assert logged_in.gw.requests[-1] == ("GET", f"/v1/tasks/{task_id}/logs")
    assert logged_in("task", "logs", task_id, "--stream", "stderr").stdout == "err\n"
    assert logged_in("task", "logs", task_id, "--stream", "stdout").stdout == "one\ntwo\n"
    body = json.loads(logged_in("task", "logs", task_id, "-o", "json").stdout)
    assert body == {
        "task_id": task_id,
        "stream": "all",
        "lines": ["one", "two", "err"],
        "stdout": "one\ntwo\n",
        "stderr": "err\n",
    }
    one = json.loads(logged_in("task", "logs", task_id, "--stream", "stdout", "-o", "json").stdout)
    assert one == {"task_id": task_id, "stream": "stdout", "lines": ["one", "two"]}
    named = logged_in.gw.add_task(name="nightly")
    named_logs = json.loads(logged_in("-o", "json", "task", "logs", named).stdout)
    assert named_logs["task_name"] == "nightly"
    assert logged_in("task", "logs", task_id, "--stream", "both").exit_code == 2


def test_logs_follow_uses_the_watch_stream(logged_in: Cy) -> None:
    task_id = logged_in.gw.add_task()
    result = logged_in("task", "logs", "-F", task_id)
    assert result.exit_code == 0
    assert (result.stdout, result.stderr) == ("hello from the sandbox\n", "warn\n")
    assert logged_in.gw.paths() == [f"/v1/tasks/{task_id}/watch"]
    errs = logged_in("task", "logs", "--follow", "--stream", "stderr", task_id)
    assert errs.stdout == "warn\n"


def test_logs_follow_json_is_ndjson(logged_in: Cy) -> None:
    task_id = logged_in.gw.add_task()
    result = logged_in("task", "logs", "-F", task_id, "-o", "json")
    events = [json.loads(line) for line in lines(result.stdout)]
    assert events[-1]["terminal"] is True
    assert len(events) == 4


def test_logs_follow_ctrl_c(logged_in: Cy) -> None:
    task_id = logged_in.gw.add_task()

    def handler(request: Request) -> Response:
        raise KeyboardInterrupt

    logged_in.seams.transport = MockTransport(handler)
    result = logged_in("task", "logs", "-F", task_id)
    assert result.exit_code == 130


def test_cancel_with_yes(logged_in: Cy) -> None:
    task_id = logged_in.gw.add_task(status="running")
    result = logged_in("task", "cancel", "-y", task_id)
    assert result.exit_code == 0
    assert result.stdout == f"task_id={task_id} canceled=true\n"
    assert logged_in.gw.tasks[task_id]["status"] == "canceled"


def test_cancel_asks_and_obeys_yes(logged_in: Cy) -> None:
    task_id = logged_in.gw.add_task(status="running")
    result = logged_in("-o", "json", "task", "cancel", task_id, input="y\n")
    assert result.exit_code == 0
    assert f"Cancel task {task_id}?" in result.stderr
    assert json.loads(result.stdout) == {"task_id": task_id, "canceled": True}


def test_cancel_declined_sends_nothing(logged_in: Cy) -> None:
    task_id = logged_in.gw.add_task(status="running")
    result = logged_in("task", "cancel", task_id, input="n\n")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert logged_in.gw.requests == []
    assert logged_in.gw.tasks[task_id]["status"] == "running"


def test_cancel_without_answer_is_usage_error(logged_in: Cy) -> None:
    task_id = logged_in.gw.add_task(status="running")
    result = logged_in("task", "cancel", task_id, input="")
    assert result.exit_code == 2
    assert "pass -y" in result.stderr
    assert logged_in.gw.requests == []


def test_cancel_terminal_task_conflict(logged_in: Cy) -> None:
    task_id = logged_in.gw.add_task(status="completed")
    result = logged_in("task", "cancel", "-y", task_id)
    assert result.exit_code == 5
    assert result.stderr == "cynork: conflict: Conflict: task is terminal\n"


def test_cancel_missing_task_exits_4(logged_in: Cy) -> None:
    assert logged_in("task", "cancel", "-y", "nope").exit_code == 4


def test_delete_with_yes_by_name(logged_in: Cy) -> None:
    task_id = logged_in.gw.add_task(status="completed", name="old-run")
    result = logged_in("task", "delete", "-y", "old-run")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"task_id={task_id} deleted=true\n"
    assert task_id not in logged_in.gw.tasks
    assert ("DELETE", "/v1/tasks/old-run") in logged_in.gw.requests


def test_delete_asks_and_prints_json(logged_in: Cy) -> None:
    task_id = logged_in.gw.add_task(status="failed")
    result = logged_in("task", "delete", "-o", "json", task_id, input="y\n")
    assert result.exit_code == 0, result.stderr
    assert f"Delete task {task_id} with its output and artifacts?" in result.stderr
    assert json.loads(result.stdout) == {"task_id": task_id, "deleted": True}
    assert task_id not in logged_in.gw.tasks


def test_delete_declined_or_unanswered_sends_nothing(logged_in: Cy) -> None:
    task_id = logged_in.gw.add_task(status="completed")
    declined = logged_in("task", "delete", task_id, input="n\n")
    assert declined.exit_code == 0 and declined.stdout == ""
    assert f"task {task_id} kept" in declined.stderr
    unanswered = logged_in("task", "delete", task_id, input="")
    assert unanswered.exit_code == 2 and "pass -y" in unanswered.stderr
    assert logged_in.gw.requests == []
    assert task_id in logged_in.gw.tasks


def test_delete_running_task_conflict_and_missing_task(logged_in: Cy) -> None:
    task_id = logged_in.gw.add_task(status="running")
    result = logged_in("task", "delete", "-y", task_id)
    assert result.exit_code == 5
    assert "cancel it before deleting it" in result.stderr
    assert task_id in logged_in.gw.tasks
    assert logged_in("task", "delete", "-y", "nope").exit_code == 4


def test_commands_need_login(cy: Cy) -> None:
    for args in (("task", "list"), ("task", "get", "x"), ("task", "create", "-p", "x")):
        result = cy(*args)
        assert result.exit_code == 3
        assert "not logged in; run `cynork auth login`" in result.stderr
    assert cy.gw.requests == []


def test_forbidden_is_exit_3(logged_in: Cy) -> None:
    logged_in.gw.inject[("GET", "/v1/tasks")] = problem(403, "Forbidden", "admins only")
    result = logged_in("task", "list")
    assert result.exit_code == 3
    assert "forbidden: Forbidden: admins only" in result.stderr


def test_wait_on_a_terminal_keeps_the_spinner_turning_while_it_reopens(logged_in: Cy) -> None:
    logged_in.seams.stderr_tty = True
    task_id = logged_in.gw.add_task()
    watch = ("GET", f"/v1/tasks/{task_id}/watch")
    logged_in.gw.inject[watch] = _stream({"task_id": task_id, "status": "running"})

    def pause(seconds: float) -> None:
        logged_in.sleeps.append(seconds)
        logged_in.gw.inject.pop(watch, None)

    logged_in.seams.sleep = pause
    result = logged_in("task", "result", "-w", task_id)
    assert result.exit_code == 0, result.output
    assert lines(result.stdout)[0] == f"task_id={task_id} status=completed"
    # The 1 s pause before reopening is slept in spinner ticks.
    assert sum(logged_in.sleeps) == pytest.approx(1.0)
    assert max(logged_in.sleeps) <= 0.1
    assert logged_in.gw.requests.count(watch) == 2
