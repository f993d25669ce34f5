"""task create: input modes, options, file checks before any request, --result."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from cynork import _files
from cynork._files import ATTACHMENT_LIMIT, COMMANDS_LIMIT, PROMPT_LIMIT, SCRIPT_LIMIT
from tests.cynork.conftest import Cy, lines
from tests.cynork.fake_gateway import problem


@pytest.fixture
def logged_in(cy: Cy) -> Cy:
    cy.login()
    return cy


def _sent(cy: Cy) -> dict[str, object]:
    assert cy.gw.paths() == ["/v1/tasks"]
    body = cy.gw.bodies[0]
    assert isinstance(body, dict)
    return body


@pytest.mark.parametrize("flag", ["-p", "--prompt", "-t", "--task"])
def test_prompt_flags(logged_in: Cy, flag: str) -> None:
    result = logged_in("task", "create", flag, "say hi")
    assert result.exit_code == 0, result.output
    task_id = next(iter(logged_in.gw.tasks))
    assert result.stdout == f"task_id={task_id} status=queued\n"
    assert _sent(logged_in) == {"input_mode": "prompt", "prompt": "say hi"}


def test_all_options_reach_the_body(logged_in: Cy) -> None:
    result = logged_in(
        "task", "create", "-p", "hi", "--name", "greet", "--use-inference",
        "--timeout", "30", "--image", "localhost/x",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "task_name=greet" in result.stdout
    assert _sent(logged_in) == {
        "input_mode": "prompt",
        "prompt": "hi",
        "task_name": "greet",
        "use_inference": True,
        "timeout_seconds": 30,
        "image": "localhost/x",
    }


def test_json_output_has_rest_keys(logged_in: Cy) -> None:
    result = logged_in("-o", "json", "task", "create", "-p", "hi", "--name", "n")
    body = json.loads(result.stdout)
    assert set(body) == {"task_id", "task_name", "status", "attachments"}
    assert body["status"] == "queued"


def test_prompt_from_file(logged_in: Cy, tmp_path: Path) -> None:
    path = tmp_path / "prompt.md"
    path.write_text("# Title\nexplain\n")
    assert logged_in("task", "create", "-f", str(path)).exit_code == 0
    assert _sent(logged_in)["prompt"] == "# Title\nexplain\n"


def test_script_file(logged_in: Cy, tmp_path: Path) -> None:
    path = tmp_path / "run.sh"
    path.write_text("echo hi\n")
    assert logged_in("task", "create", "-s", str(path)).exit_code == 0
    assert _sent(logged_in) == {"input_mode": "script", "script": "echo hi\n"}


def test_commands_from_flags_and_file(logged_in: Cy, tmp_path: Path) -> None:
    path = tmp_path / "cmds"
    path.write_text("echo one\n\n# a comment\necho two\n")
    result = logged_in("task", "create", "--commands-file", str(path), "--command", "echo three")
    assert result.exit_code == 0, result.output
    assert _sent(logged_in) == {
        "input_mode": "commands",
        "commands": ["echo one", "echo two", "echo three"],
    }


def test_attachments_are_base64(logged_in: Cy, tmp_path: Path) -> None:
    a = tmp_path / "a.bin"
    a.write_bytes(b"\x00\x01binary")
    b = tmp_path / "b.txt"
    b.write_text("text")
    result = logged_in("task", "create", "--command", "ls", "-a", str(a), "--attach", str(b))
    assert result.exit_code == 0, result.output
    sent = _sent(logged_in)["attachments"]
    assert sent == [
        {"name": "a.bin", "content": base64.b64encode(b"\x00\x01binary").decode()},
        {"name": "b.txt", "content": base64.b64encode(b"text").decode()},
    ]


def _big(path: Path, size: int) -> str:
    with path.open("wb") as handle:
        handle.truncate(size)
    return str(path)


def _no_request_exit_2(cy: Cy, *args: str) -> str:
    result = cy("task", "create", *args)
    assert result.exit_code == 2, result.output
    assert cy.gw.requests == []
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    return result.stderr


def test_missing_script_file_exits_2_before_any_request(cy: Cy) -> None:
    # Not even logged in: the file check still comes first.
    err = _no_request_exit_2(cy, "-s", "/nonexistent/run.sh")
    assert err == "cynork: script file /nonexistent/run.sh does not exist\n"


@pytest.mark.parametrize(
    ("flag", "limit", "what"),
    [
        ("-f", PROMPT_LIMIT, "prompt"),
        ("-s", SCRIPT_LIMIT, "script"),
        ("--commands-file", COMMANDS_LIMIT, "commands"),
        ("-a", ATTACHMENT_LIMIT, "attachment"),
    ],
)
def test_files_over_limit(logged_in: Cy, tmp_path: Path, flag: str, limit: int, what: str) -> None:
    path = _big(tmp_path / "big", limit + 1)
    extra = ["--command", "ls"] if flag == "-a" else []
    err = _no_request_exit_2(logged_in, *extra, flag, path)
    assert f"{what} file {path} is {limit + 1} bytes, over the" in err


@pytest.mark.parametrize("flag", ["-f", "-s", "--commands-file", "-a"])
def test_directory_is_not_a_regular_file(logged_in: Cy, tmp_path: Path, flag: str) -> None:
    extra = ["-p", "x"] if flag == "-a" else []
    err = _no_request_exit_2(logged_in, *extra, flag, str(tmp_path))
    assert "is not a regular file" in err


def test_unreadable_file(logged_in: Cy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "secret.sh"
    path.write_text("echo\n")
    # Tests run as root, where mode 000 still reads; ask access() the way a user would.
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if Path(p) == path else real_access(p, mode)
    )
    assert "is not readable" in _no_request_exit_2(logged_in, "-s", str(path))


def test_read_error_after_stat(
    logged_in: Cy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "vanishing.sh"
    path.write_text("echo\n")

    def fail(*_args: object) -> bytes:
        raise PermissionError(13, "Permission denied")

    # The module's `open` (a builtin it looks up by name): the stat before it passed.
    monkeypatch.setattr(_files, "open", fail, raising=False)
    assert "cannot read script file" in _no_request_exit_2(logged_in, "-s", str(path))


def test_stat_error_other_than_missing(logged_in: Cy, tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    err = _no_request_exit_2(logged_in, "-s", str(path / "below"))
    assert "cannot use script file" in err


def test_non_utf8_prompt_file(logged_in: Cy, tmp_path: Path) -> None:
    path = tmp_path / "p"
    path.write_bytes(b"\xff\xfe\xfa")
    assert "is not UTF-8 text" in _no_request_exit_2(logged_in, "-f", str(path))


def test_too_many_attachments(logged_in: Cy, tmp_path: Path) -> None:
    args = ["-p", "x"]
    for i in range(17):
        (tmp_path / f"f{i}").write_text("x")
        args += ["-a", str(tmp_path / f"f{i}")]
    assert "at most 16" in _no_request_exit_2(logged_in, *args)


def test_duplicate_attachment_names(logged_in: Cy, tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "same").write_text("1")
    (tmp_path / "same").write_text("2")
    err = _no_request_exit_2(
        logged_in, "-p", "x", "-a", str(tmp_path / "same"), "-a", str(tmp_path / "x" / "same")
    )
    assert "are both named same in /workspace" in err


def _names(cy: Cy) -> list[str]:
    attachments = _sent(cy)["attachments"]
    assert isinstance(attachments, list)
    return [a["name"] for a in attachments]


def test_attachments_are_sent_by_their_relative_path_and_listed(
    logged_in: Cy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("a")
    (tmp_path / "b.txt").write_text("b")
    monkeypatch.chdir(tmp_path)
    args = ("-a", "notes/a.txt", "-a", "./b.txt", "-a", str(tmp_path / "notes" / "../b.txt"))
    result = logged_in("task", "create", "--command", "ls", *args[:4])
    assert result.exit_code == 0, result.output
    assert _names(logged_in) == ["notes/a.txt", "b.txt"]
    assert result.stdout.endswith(" attachments=notes/a.txt,b.txt\n"), result.stdout
    # An absolute path inside the current directory is sent relative to it.
    logged_in.gw.requests.clear()
    logged_in.gw.bodies.clear()
    absolute = logged_in("task", "create", "--command", "ls", "-a", str(tmp_path / "b.txt"))
    assert _names(logged_in) == ["b.txt"], absolute.output
    as_json = logged_in("-o", "json", "task", "create", "--command", "ls", *args[:2])
    assert json.loads(as_json.stdout)["attachments"] == ["notes/a.txt"]
    logged_in.gw.requests.clear()
    logged_in.gw.bodies.clear()
    # `..` would climb out of the listing's tree: the base name stands in for it.
    (tmp_path / "notes" / "deeper").mkdir()
    monkeypatch.chdir(tmp_path / "notes" / "deeper")
    logged_in("task", "create", "--command", "ls", "-a", "../a.txt")
    assert _names(logged_in) == ["a.txt"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "nothing to run"),
        (("-p", "a", "--command", "ls"), "one input mode per task"),
        (("-p", "a", "-t", "b"), "give one"),
        (("-p", "   "), "the prompt is empty"),
        (("-p", "x" * (PROMPT_LIMIT + 1)), "over the 1 MiB limit"),
        (("--command", "x" * (COMMANDS_LIMIT + 1)), "over the 64 KiB limit"),
        (("-p", "x", "--timeout", "0"), "--timeout"),
    ],
)
def test_usage_errors(logged_in: Cy, args: tuple[str, ...], message: str) -> None:
    result = logged_in("task", "create", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert logged_in.gw.requests == []


def test_empty_script_and_comment_only_commands(logged_in: Cy, tmp_path: Path) -> None:
    empty = tmp_path / "empty.sh"
    empty.write_text("\n")
    assert "is empty" in _no_request_exit_2(logged_in, "-s", str(empty))
    comments = tmp_path / "cmds"
    comments.write_text("# nothing\n\n")
    assert "no commands given" in _no_request_exit_2(logged_in, "--commands-file", str(comments))


@pytest.mark.parametrize(
    ("status", "code", "fragment"),
    [
        (413, 6, "request too large"),
        (400, 6, "refused the request"),
        (422, 6, "refused the request"),
        (409, 5, "conflict"),
        (500, 7, "gateway error 500"),
        (503, 7, "gateway error 503"),
    ],
)
def test_server_errors(logged_in: Cy, status: int, code: int, fragment: str) -> None:
    logged_in.gw.inject[("POST", "/v1/tasks")] = problem(status, "Some Title", "some detail")
    result = logged_in("task", "create", "-p", "x")
    assert result.exit_code == code
    assert fragment in result.stderr
    assert "Some Title: some detail" in result.stderr
    assert "Traceback" not in result.output


def test_result_waits_and_prints_output(logged_in: Cy) -> None:
    logged_in.gw.stderr = "a warning\n"
    result = logged_in("task", "create", "-p", "hi", "--result")
    assert result.exit_code == 0, result.output
    task_id = next(iter(logged_in.gw.tasks))
    assert lines(result.stdout) == [
        f"task_id={task_id} status=queued",
        f"task_id={task_id} status=completed",
        "hello from the sandbox",
    ]
    assert "a warning" in result.stderr
    assert f"task {task_id}: running" in result.stderr
    # Woken by the watch stream, whose terminal event carries the result: no polling,
    # no sleeping, no second call.
    assert logged_in.sleeps == []
    assert logged_in.gw.requests[1:] == [("GET", f"/v1/tasks/{task_id}/watch")]


def test_result_from_an_older_gateway_is_read_after_the_watch(logged_in: Cy) -> None:
    logged_in.gw.watch_sends_result = False  # the terminal event comes without it
    result = logged_in("task", "create", "-p", "hi", "--result")
    assert result.exit_code == 0, result.output
    task_id = next(iter(logged_in.gw.tasks))
    assert lines(result.stdout)[1:] == [
        f"task_id={task_id} status=completed",
        "hello from the sandbox",
    ]
    assert logged_in.gw.requests[1:] == [
        ("GET", f"/v1/tasks/{task_id}/watch"),
        ("GET", f"/v1/tasks/{task_id}/result"),
    ]


def test_result_json_is_one_object(logged_in: Cy) -> None:
    result = logged_in("-o", "json", "task", "create", "-p", "hi", "--result")
    body = json.loads(result.stdout)
    assert body["status"] == "completed"
    assert body["stdout"] == "hello from the sandbox\n"


def test_result_needs_a_task_id(logged_in: Cy) -> None:
    logged_in.gw.inject[("POST", "/v1/tasks")] = (201, {"content-type": "application/json"}, b"{}")
    result = logged_in("task", "create", "-p", "hi", "--result")
    assert result.exit_code == 7
    assert "did not return a task_id" in result.stderr
