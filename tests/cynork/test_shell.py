"""The interactive shell in process: completion, dispatch, history, Ctrl-C and Ctrl-D.

The same shell runs in a real terminal in test_shell_tmux.py; here prompt-toolkit reads
keys from a pipe so each branch is reached deterministically.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.input.base import PipeInput
from prompt_toolkit.output import DummyOutput

from cynork._app import App, Seams
from cynork._shell import Shell, ShellCompleter, TaskIdSource, prompt_text
from cynork.cli import cli
from tests.cynork.conftest import Cy


@pytest.fixture
def pipe() -> Iterator[PipeInput]:
    with create_pipe_input() as inp:
        yield inp


@pytest.fixture
def shell_cy(cy: Cy, pipe: PipeInput) -> Cy:
    cy.seams.shell_input = pipe
    cy.seams.shell_output = DummyOutput()
    return cy


def _app(cy: Cy) -> App:
    return App(
        cy.seams,
        config_path=None,
        gateway_url=None,
        output_mode="table",
        ca_file=None,
        insecure=False,
    )


def _complete(completer: ShellCompleter, text: str) -> list[str]:
    return [c.text for c in completer.get_completions(Document(text), CompleteEvent())]


@pytest.fixture
def completer(cy: Cy) -> ShellCompleter:
    cy.login()
    return ShellCompleter(cli, TaskIdSource(_app(cy)))


def test_complete_commands(completer: ShellCompleter) -> None:
    top = _complete(completer, "")
    assert {"auth", "task", "status", "version", "completion", "help", "exit", "quit"} <= set(top)
    assert _complete(completer, "ta") == ["task"]
    assert _complete(completer, "help ta") == ["task"]
    assert _complete(completer, "task ") == [
        "artifacts", "cancel", "create", "delete", "get", "list", "logs", "result",
        "watch",
    ]  # fmt: skip
    assert _complete(completer, "auth w") == ["whoami"]


def test_complete_flags_and_values(completer: ShellCompleter) -> None:
    flags = _complete(completer, "task create --")
    assert {"--prompt", "--script", "--command", "--result", "--attach", "--help"} <= set(flags)
    assert "-p" in _complete(completer, "task create -")
    assert _complete(completer, "task logs X --stream ") == ["stdout", "stderr", "all"]
    assert _complete(completer, "-o j") == ["json"]
    assert _complete(completer, "task list --status c") == ["completed", "canceled"]
    assert _complete(completer, "task list --limit ") == []
    assert _complete(completer, "completion f") == ["fish"]
    assert _complete(completer, "task create --result ") == []
    assert _complete(completer, "task get ID ") == []


def test_complete_paths_for_file_options(completer: ShellCompleter, tmp_path: Path) -> None:
    (tmp_path / "run.sh").write_text("echo\n")
    assert _complete(completer, f"task create -s {tmp_path}/ru") == ["n.sh"]
    assert _complete(completer, f"task create --script={tmp_path}/ru") == []


def test_complete_task_ids_recent_then_listed(cy: Cy, completer: ShellCompleter) -> None:
    listed = cy.gw.add_task(name="listed")
    cy.seams.recent.add("01HRECENT")
    ids = _complete(completer, "task get ")
    assert ids == ["01HRECENT", listed, "listed"]
    assert _complete(completer, "task cancel -y 01HR") == ["01HRECENT"]
    assert _complete(completer, "task delete -y 01HR") == ["01HRECENT"]
    # The list is fetched once per shell, not per Tab.
    _complete(completer, "task get ")
    assert cy.gw.paths().count("/v1/tasks") == 1


def test_complete_ids_when_gateway_fails(cy: Cy) -> None:
    completer = ShellCompleter(cli, TaskIdSource(_app(cy)))  # not logged in
    assert _complete(completer, "task result ") == []


def test_complete_with_open_quote(completer: ShellCompleter) -> None:
    assert _complete(completer, 'task create -p "half') == []


def test_shell_runs_lines_and_survives_errors(
    shell_cy: Cy, pipe: PipeInput, config_dir: Path
) -> None:
    shell_cy.login()
    task_id = shell_cy.gw.add_task(status="running")
    pipe.send_text(
        "status\r"
        "task get nope\r"  # exit 4, the shell goes on
        "frobnicate\r"  # usage error
        'task create -p "unclosed\r'  # shlex error
        "\r"
        f"cynork task get {task_id}\r"
        "shell\r"  # nested shell refused
        "partial line\x03"  # Ctrl-C drops the line
        "help task\r"
        "help\r"
        "exit\r"
    )
    result = shell_cy("shell")
    assert result.exit_code == 0, result.output
    assert "gateway=ok ready=ok" in result.stdout
    assert "cynork: task nope not found" in result.stderr
    assert "No such command 'frobnicate'" in result.stderr
    assert "No closing quotation" in result.stderr
    assert f"task_id={task_id} status=running" in result.stdout
    assert "already in the cynork shell" in result.stderr
    assert "Usage: cynork task [OPTIONS] COMMAND" in result.stdout
    assert "Usage: cynork [OPTIONS] [COMMAND]" in result.stdout
    assert result.stderr.rstrip().endswith("bye")
    history = config_dir / "history"
    assert stat.S_IMODE(history.stat().st_mode) == 0o600
    assert "task get nope" in history.read_text()
    assert "partial line" not in history.read_text()
    assert task_id in shell_cy.seams.recent.newest_first()


def test_ctrl_d_leaves(shell_cy: Cy, pipe: PipeInput) -> None:
    pipe.send_text("version\r\x04")
    result = shell_cy("shell")
    assert result.exit_code == 0
    assert "version=" in result.stdout
    assert "bye" in result.stderr


def test_bare_cynork_on_a_terminal_opens_the_shell(shell_cy: Cy, pipe: PipeInput) -> None:
    shell_cy.seams.stdin_tty = shell_cy.seams.stdout_tty = True
    pipe.send_text("quit\r")
    result = shell_cy()
    assert result.exit_code == 0
    assert "cynork shell:" in result.stderr
    assert "Usage:" not in result.stdout


def test_shell_keeps_global_options(shell_cy: Cy, pipe: PipeInput, tmp_path: Path) -> None:
    shell_cy.login()
    shell_cy.gw.add_task()
    pipe.send_text("task list\rexit\r")
    config = shell_cy.config_file
    result = shell_cy("--config", str(config), "-o", "json", "shell")
    assert result.stdout.startswith('{"tasks":[')


def test_dispatch_maps_every_failure(cy: Cy) -> None:
    shell = Shell(_app(cy), cli, history=InMemoryHistory(), pt_output=DummyOutput())

    @cli.command("boom", hidden=True)
    @click.argument("kind")
    def boom(kind: str) -> None:
        if kind == "abort":
            raise click.exceptions.Abort()
        if kind == "interrupt":
            raise KeyboardInterrupt
        if kind == "exit":
            raise SystemExit(5)
        if kind == "exit-text":
            raise SystemExit("bye")
        raise RuntimeError("surprise")

    try:
        expected = {"abort": 130, "interrupt": 130, "exit": 5, "exit-text": 8, "other": 8}
        for kind, code in expected.items():
            assert shell.run_line(f"boom {kind}") is True
            assert shell.last_exit == code
    finally:
        cli.commands.pop("boom")
    assert shell.run_line("quit") is False


def test_shell_usage_error_is_one_line(cy: Cy, capsys: pytest.CaptureFixture[str]) -> None:
    shell = Shell(_app(cy), cli, history=InMemoryHistory(), pt_output=DummyOutput())
    capsys.readouterr()
    assert shell.run_line("task get") is True
    assert shell.last_exit == 2
    assert capsys.readouterr().err == (
        "cynork: Missing argument 'ID'. (see `cynork task get --help`)\n"
    )


def test_history_falls_back_to_memory(cy: Cy, config_dir: Path, tmp_path: Path) -> None:
    config_dir.parent.mkdir(parents=True)
    config_dir.write_text("a file where the directory should be")
    app = App(
        cy.seams,
        config_path=str(tmp_path / "c.yaml"),
        gateway_url=None,
        output_mode="table",
        ca_file=None,
        insecure=False,
    )
    shell = Shell(app, cli, pt_output=DummyOutput())
    assert isinstance(shell.session.history, InMemoryHistory)


def test_app_outside_the_root_group() -> None:
    @click.command()
    def lonely() -> None:
        from cynork._app import get_app

        get_app()

    result = click.testing.CliRunner().invoke(lonely, [], obj=Seams())
    assert result.exit_code == 2


def test_shell_dash_c_runs_one_line_and_exits_with_its_code(cy: Cy) -> None:
    cy.login()
    task_id = cy.gw.add_task(status="running")
    result = cy("shell", "-c", "task list")
    assert result.exit_code == 0, result.output
    assert f"task_id={task_id} status=running" in result.stdout
    assert "cynork shell:" not in result.stderr and "bye" not in result.stderr
    missing = cy("-o", "json", "shell", "--command", "task get nope")
    assert missing.exit_code == 4
    assert missing.stderr == "cynork: task nope not found\n"
    assert cy("shell", "-c", "task get").exit_code == 2
    assert cy("shell", "-c", "").exit_code == 0


def test_the_prompt_names_the_user_and_the_gateway_host(cy: Cy) -> None:
    app = _app(cy)
    assert prompt_text(app) == "cynork localhost:12080> "
    cy.login()
    # Read afresh: a login in this very shell shows at the next prompt.
    assert prompt_text(app) == "cynork admin@localhost:12080> "


def test_quiet_shell_says_no_hello_and_no_bye(shell_cy: Cy, pipe: PipeInput) -> None:
    pipe.send_text("version\r\x04")
    result = shell_cy("-q", "shell")
    assert result.exit_code == 0
    assert result.stderr == ""
    assert "version=" in result.stdout
