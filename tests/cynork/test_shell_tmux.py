"""`cynork shell` for real: the installed console script in a tmux terminal.

tmux gives the shell a real pty, so prompt-toolkit, Tab completion, Ctrl-C and Ctrl-D
behave as for a user. The gateway is the fake one behind a real HTTP server on
127.0.0.1; features/cynork runs the same binary against the real orchestrator.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.cynork.fake_gateway import FakeGateway

CYNORK = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "cynork"
DEADLINE = 20.0
COV_VARS = ("COVERAGE_PROCESS_START", "COVERAGE_PROCESS_CONFIG")
_sessions = itertools.count()


class Terminal:
    """One tmux server (private socket) running one command in a 160x40 pane."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.socket = f"cynork-test-{os.getpid()}-{next(_sessions)}"
        # The binary is not measured: keep coverage's subprocess hook (pytest-cov) out of it.
        unset = [w for name in ("XDG_CONFIG_HOME", *COV_VARS) for w in ("-u", name)]
        env_words = ["env", *unset, *(f"{k}={v}" for k, v in env.items())]
        # bash prints the exit status on the screen (tmux's pane_dead_status is racy); unlike
        # dash it lives on when Ctrl-C reaches its child that handles SIGINT and exits later.
        line = shlex.join([*env_words, "bash", "-c", '"$@"; echo "[exit=$?]"', "bash", *command])
        self._tmux(
            "-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", "160", "-y", "40", line,
            ";", "set-option", "-t", "t", "remain-on-exit", "on",
        )  # fmt: skip

    def _tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True
        )
        return done.stdout

    def send(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "t", *keys)

    def type(self, text: str) -> None:
        self._tmux("send-keys", "-t", "t", "-l", text)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "t", "-S", "-200")

    def wait_for(self, predicate: Callable[[str], bool], what: str) -> str:
        end = time.monotonic() + DEADLINE
        while True:
            screen = self.screen()
            if predicate(screen):
                return screen
            if time.monotonic() > end:
                raise AssertionError(f"waited for {what}; screen:\n{screen}")
            time.sleep(0.05)

    def wait_text(self, text: str) -> str:
        return self.wait_for(lambda s: text in s, repr(text))

    def wait_exit(self) -> str:
        """The command's exit status, as sh printed it."""
        screen = self.wait_for(lambda s: re.search(r"\[exit=\d+\]", s) is not None, "exit")
        match = re.search(r"\[exit=(\d+)\]", screen)
        assert match
        return match.group(1)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, check=False)


@pytest.fixture
def gateway() -> Iterator[tuple[FakeGateway, str]]:
    gw = FakeGateway()
    server = gw.serve()
    try:
        yield gw, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def home(tmp_path: Path, gateway: tuple[FakeGateway, str]) -> Path:
    """A HOME whose cynork config is logged in to the fake gateway."""
    gw, url = gateway
    access, refresh = gw.issue()
    config = tmp_path / ".config" / "cynork" / "config.yaml"
    config.parent.mkdir(parents=True, mode=0o700)
    config.write_text(
        yaml.safe_dump(
            {"gateway_url": url, "token": access, "refresh_token": refresh, "user": "admin"}
        )
    )
    config.chmod(0o600)
    return tmp_path


@pytest.fixture
def terminal_factory(home: Path) -> Iterator[Callable[..., Terminal]]:
    made: list[Terminal] = []

    def make(*args: str) -> Terminal:
        term = Terminal([str(CYNORK), *args], {"HOME": str(home), "TERM": "xterm"})
        made.append(term)
        return term

    yield make
    for term in made:
        term.close()


def _prompt(url: str) -> str:
    """The shell's prompt: the user and the gateway's host (SPEC §5.4)."""
    return f"cynork admin@{url.removeprefix('http://')}>"


def _prompts(screen: str) -> int:
    return screen.count("cynork admin@")


def test_shell_commands_completion_ctrl_c_and_ctrl_d(
    gateway: tuple[FakeGateway, str], home: Path, terminal_factory: Callable[..., Terminal]
) -> None:
    gw, url = gateway
    prompt = _prompt(url)
    task_id = gw.add_task(status="running")
    term = terminal_factory("shell")
    term.wait_text(prompt)

    term.type("status")
    term.send("Enter")
    term.wait_text("gateway=ok ready=ok")

    # Tab completes the subcommand, then the only task id (from a lazily fetched list).
    term.type("task g")
    term.send("Tab")
    term.wait_text(f"{prompt} task get")
    term.type(" ")
    term.send("Tab")
    term.wait_text(f"{prompt} task get {task_id}")
    term.send("Enter")
    term.wait_text(f"task_id={task_id} status=running input_mode=prompt")

    # Ctrl-C drops the half-typed line; the shell stays.
    term.type("garbage never run")
    term.send("C-c")
    term.wait_for(lambda s: _prompts(s) >= 4, "a fresh prompt after Ctrl-C")
    term.type("auth whoami")
    term.send("Enter")
    screen = term.wait_text("id=01HUSER user=admin")
    assert "No such command" not in screen
    assert "[exit=" not in screen

    # A failing command prints one line and the shell goes on.
    term.type("task get nope")
    term.send("Enter")
    term.wait_text("cynork: task nope not found")

    # Waiting shows the result in the same terminal.
    term.type('task create -p "say hi" --result')
    term.send("Enter")
    term.wait_text("hello from the sandbox")
    # Keys typed before the prompt is back go to the cooked-mode tty, where ^D is lost.
    term.wait_for(lambda s: s.rstrip().endswith(prompt), "the prompt after the result")
    term.send("C-d")
    assert term.wait_exit() == "0"
    assert "bye" in term.screen()
    history = (home / ".config" / "cynork" / "history").read_text()
    assert "auth whoami" in history
    assert "garbage never run" not in history


def test_ctrl_c_stops_a_wait_not_the_shell(
    gateway: tuple[FakeGateway, str], terminal_factory: Callable[..., Terminal]
) -> None:
    gw, url = gateway
    gw.polls_to_finish = 10**9
    gw.watch_holds = True
    task_id = gw.add_task(status="running")
    term = terminal_factory("shell")
    term.wait_text(_prompt(url))
    term.type(f"task result -w {task_id}")
    term.send("Enter")
    term.wait_text(f"task {task_id}: running")  # the live status line
    term.send("C-c")
    term.wait_text(f"interrupted; task {task_id} keeps running")
    term.type("version")
    term.send("Enter")
    term.wait_text("gateway_version=9.8.7")
    term.type("exit")
    term.send("Enter")
    assert term.wait_exit() == "0"


def test_bare_cynork_on_a_terminal_is_the_shell(
    gateway: tuple[FakeGateway, str], terminal_factory: Callable[..., Terminal]
) -> None:
    term = terminal_factory()
    term.wait_text(_prompt(gateway[1]))
    term.type("quit")
    term.send("Enter")
    assert term.wait_exit() == "0"
