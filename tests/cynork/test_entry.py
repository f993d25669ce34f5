"""The console script's entry (cynork._entry): Ctrl-C while Python still imports the
commands ends the process with one line and exit 130, never a traceback.

The real processes here are the installed `.venv/bin/cynork` script and a Python that
runs the same entry with the import of `cynork.cli` held open, so the SIGINT lands in
the window on purpose, not by timing luck.
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest

import cynork
from cynork import _entry
from cynork._errors import EXIT_INTERRUPTED
from tests.cynork.fake_gateway import FakeGateway

ROOT = Path(__file__).resolve().parents[2]
CYNORK = ROOT / ".venv" / "bin" / "cynork"
PYTHON = ROOT / ".venv" / "bin" / "python"
WAIT = 30.0

# `import cynork.cli` held open until a signal arrives, as a slow disk or a loaded
# machine would hold it; the marker line says the entry's handler is in place by then.
SLOW_IMPORT = textwrap.dedent(
    """
    import sys, time

    class SlowCli:
        def find_spec(self, name, path=None, target=None):
            if name == "cynork.cli":
                print("importing cynork.cli", flush=True)
                time.sleep(60)
            return None

    sys.meta_path.insert(0, SlowCli())
    from cynork._entry import main
    sys.exit(main())
    """
)


@pytest.fixture(autouse=True)
def _unfreeze() -> Iterator[None]:
    """`_entry.main` run in this process freezes pytest's objects too; thaw them."""
    yield
    gc.unfreeze()


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CYNORK_", "COV_"))}
    return {**env, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}


def _wait_for(proc: subprocess.Popen[bytes], ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not ready():
        assert proc.poll() is None, f"the process ended before {what}"
        assert time.monotonic() < deadline, f"no {what} in {WAIT}s"
        time.sleep(0.001)


def test_sigint_while_the_commands_import_exits_130_quietly(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [str(PYTHON), "-c", SLOW_IMPORT],
        env=_env(tmp_path),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"importing cynork.cli\n"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == EXIT_INTERRUPTED == _entry.EXIT_INTERRUPTED
    assert (out, err) == (b"", b"cynork: interrupted\n")


# The entry run with the HTTP client's import held open: `version` loads it when it first
# asks the gateway, so the SIGINT lands while the client loads, under the same handler.
SLOW_CLIENT = SLOW_IMPORT.replace('"cynork.cli"', '"cynork._http"').replace(
    "importing cynork.cli", "importing cynork._http"
)


def test_sigint_while_the_http_client_loads_exits_130_quietly(tmp_path: Path) -> None:
    """No longer at start but when `version` first asks the gateway: had the signal come
    after the load, the refused connection would print and exit 0."""
    proc = subprocess.Popen(
        [str(PYTHON), "-c", SLOW_CLIENT, "--gateway-url", "http://127.0.0.1:9", "version"],
        env=_env(tmp_path),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"importing cynork._http\n"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=WAIT)
    assert (proc.returncode, out, err) == (130, b"", b"cynork: interrupted\n")


def test_sigint_ignored_by_the_parent_stays_ignored(tmp_path: Path) -> None:
    """`cynork ... &` in a script starts with SIGINT ignored; the entry keeps it so."""
    proc = subprocess.Popen(
        [str(PYTHON), "-c", SLOW_IMPORT.replace("time.sleep(60)", "time.sleep(0.5)")],
        env=_env(tmp_path),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"importing cynork.cli\n"
    proc.send_signal(signal.SIGINT)
    # No arguments: the help text, and exit 0 once the import is done.
    out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err
    assert b"Usage: cynork" in out and err == b""


def test_main_runs_the_command_line_and_restores_python_handler(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["cynork", "--version"])
    assert _entry.main() == 0
    assert "cynork, version" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_main_leaves_an_ignored_sigint_alone(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["cynork", "--version"])
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert _entry.main() == 0
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
    assert "cynork, version" in capsys.readouterr().out


def test_the_start_up_handler_writes_one_line_and_exits_130(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    written: list[tuple[int, bytes]] = []

    def fake_write(fd: int, data: bytes) -> int:
        written.append((fd, data))
        return len(data)

    def fake_exit(code: int) -> None:
        raise SystemExit(code)

    monkeypatch.setattr(os, "write", fake_write)
    monkeypatch.setattr(os, "_exit", fake_exit)
    with pytest.raises(SystemExit) as exited:
        _entry._interrupted_while_starting(signal.SIGINT, None)
    assert exited.value.code == 130
    assert written == [(2, b"cynork: interrupted\n")]


def test_importing_the_package_loads_no_dependency(tmp_path: Path) -> None:
    """What keeps the window before the entry's handler short: `import cynork` and
    `cynork._entry` load neither the HTTP client nor click nor typing; the public names still
    resolve on first use."""
    code = (
        "import sys, cynork._entry; "
        "print(sorted(m for m in ('socket', 'click', 'typing', 'yaml') if m in sys.modules))"
    )
    done = subprocess.run(
        [str(PYTHON), "-c", code], env=_env(tmp_path), capture_output=True, check=True
    )
    assert done.stdout == b"[]\n", done.stderr
    assert cynork.GatewayClient.__name__ == "GatewayClient"
    assert cynork.NotFoundError.exit_code == 4
    assert "GatewayClient" in dir(cynork)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = cynork.nope  # type: ignore[attr-defined]


# The whole `task create --command true --result` against a real HTTP server (the fake
# gateway), then what the process imported. Run with no config file, as the bench does.
TASK_CREATE = textwrap.dedent(
    """
    import contextlib, io, sys
    # Not installed with cynork (they came with httpx): importing them fails here.
    sys.modules.update(dict.fromkeys(("httpx", "httpcore", "certifi")))
    from cynork import _entry
    from tests.cynork.fake_gateway import FakeGateway

    gateway = FakeGateway()
    gateway.access.add("tok")
    server = gateway.serve()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    before = set(sys.modules)
    run = _entry.import_commands()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        shell = run(["--gateway-url", url, "shell", "-c", "version"])
        code = run(["--gateway-url", url, "task", "create", "--command", "true", "--result"])
    print(shell, code, "status=completed" in out.getvalue())
    heavy = ("ssl", "email", "http.client", "urllib.request", "yaml")
    print([m for m in heavy if m in sys.modules and m not in before])
    """
)

# The same command line in a fresh interpreter, as the console script runs it, then every
# module the process holds: what §7b took off a start must stay off.
TASK_CREATE_ALONE = textwrap.dedent(
    """
    import contextlib, io, sys
    from cynork import _entry

    url = sys.argv[1]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = _entry.main()
    print(code, "status=completed" in out.getvalue())
    print(" ".join(sorted(sys.modules)))
    """
)
# Modules a plain-http `task create --command true --result` does without (each ~0.5-2 ms
# of CPU): paths are os.path, URLs of plain characters are split without urllib.parse,
# the classes are plain classes, and the watch is read on the main thread without a pipe.
NOT_AT_START = ("pathlib", "urllib.parse", "ipaddress", "dataclasses", "queue", "fnmatch")


def test_task_create_result_imports_no_tls_email_nor_yaml(tmp_path: Path) -> None:
    """What a plain-http `task create --result` needs: sockets and json. Not httpx,
    httpcore or certifi (no longer installed with cynork: the shell too runs without
    them), not `http.client` (it loads `email`), not `ssl` (a plain-http gateway needs
    no TLS), not yaml without a config file (docs/fast-path.md §7a)."""
    env = {**_env(tmp_path), "CYNORK_TOKEN": "tok", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [str(PYTHON), "-c", TASK_CREATE], env=env, capture_output=True, timeout=WAIT, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == ["0 0 True", "[]"]


def test_task_create_result_imports_no_pathlib_urllib_nor_dataclasses(tmp_path: Path) -> None:
    """A whole `task create --command true --result` in its own process, against a real
    HTTP server, with no config file, as the bench runs it (docs/fast-path.md §7b)."""
    gateway = FakeGateway()
    gateway.access.add("tok")
    server = gateway.serve()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        env = {**_env(tmp_path), "CYNORK_TOKEN": "tok", "CYNORK_GATEWAY_URL": url}
        argv = ["task", "create", "--command", "true", "--result"]
        done = subprocess.run(
            [str(PYTHON), "-c", TASK_CREATE_ALONE, *argv],
            env=env,
            capture_output=True,
            timeout=WAIT,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr
    first, modules = done.stdout.decode().splitlines()
    assert first == "0 True"
    loaded = set(modules.split())
    assert {"cynork.commands.task_create", "cynork._http", "json"} <= loaded
    assert [m for m in NOT_AT_START if m in loaded] == []


def test_the_console_script_runs(tmp_path: Path) -> None:
    shown = subprocess.run(
        [str(CYNORK), "--help"], env=_env(tmp_path), capture_output=True, timeout=WAIT, check=False
    )
    assert shown.returncode == 0 and b"Usage: cynork" in shown.stdout


IMPORTED_FROZEN = textwrap.dedent(
    """
    import gc, sys
    from cynork import _entry

    collections = []
    gc.callbacks.append(lambda phase, info: phase == "start" and collections.append(info))
    run = _entry.import_commands()
    frozen = gc.get_freeze_count()
    print(len(collections), gc.isenabled(), frozen > 15_000, "cynork._client" in sys.modules)
    _entry.load("cynork._client")
    print(len(collections), gc.isenabled(), gc.get_freeze_count() > frozen + 300)
    gc.unfreeze()
    _entry.load("cynork._client")
    print(gc.get_freeze_count(), run.__module__, run.__name__)
    """
)


def test_the_loads_run_with_the_collector_held_off_then_frozen(tmp_path: Path) -> None:
    """No collection runs while the commands import, nor while the HTTP client loads
    (each would walk every object made so far), and what they made is frozen, so later
    collections and the shutdown skip it; the collector is back on for the command
    itself. A module already loaded is not frozen again (docs/fast-path.md §7)."""
    done = subprocess.run(
        [str(PYTHON), "-c", IMPORTED_FROZEN], env=_env(tmp_path), capture_output=True, timeout=WAIT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == [
        "0 True True False",
        "0 True True",
        "0 cynork.cli main",
    ]


def test_a_collector_the_caller_turned_off_stays_off(tmp_path: Path) -> None:
    code = "import gc; gc.disable(); from cynork import _entry; _entry.import_commands(); "
    code += "print(gc.isenabled())"
    done = subprocess.run(
        [str(PYTHON), "-c", code], env=_env(tmp_path), capture_output=True, timeout=WAIT
    )
    assert done.stdout == b"False\n", done.stderr


ONE_COMMAND = textwrap.dedent(
    """
    import contextlib, io, sys
    from cynork import _entry

    run = _entry.import_commands()
    loaded = lambda: sorted(m for m in sys.modules if m.startswith("cynork.commands."))
    heavy = ("click.shell_completion", "prompt_toolkit", "cynork._shell", "cynork._chat", "socket")
    print(loaded(), [m for m in heavy if m in sys.modules])
    with contextlib.redirect_stdout(io.StringIO()):
        assert run(sys.argv[1:]) == 0
    print(loaded(), [m for m in heavy if m in sys.modules])
    """
)


def test_a_command_line_imports_only_the_command_it_names(tmp_path: Path) -> None:
    """Start-up loads no command module; `task create` loads its own and no other (nor
    click's shell completion, prompt-toolkit, the shell or the chat), and its help no
    HTTP client."""
    done = subprocess.run(
        [str(PYTHON), "-c", ONE_COMMAND, "task", "create", "--help"],
        env=_env(tmp_path),
        capture_output=True,
        timeout=WAIT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == ["[] []", "['cynork.commands.task_create'] []"]


def test_help_and_the_shell_see_every_command() -> None:
    """Listing (help, the shell's completer) imports what it lists: the whole tree."""
    from cynork.cli import cli
    from cynork.commands import ROOT_LAZY, LazyGroup, subcommands

    root = subcommands(cli)
    assert {*ROOT_LAZY, "auth", "task", "models"} <= set(root)
    for name in ("task", "auth", "models", "users", "nodes", "audit"):
        group = root[name]
        assert isinstance(group, click.Group) and subcommands(group), name
    task, users = root["task"], root["users"]
    assert isinstance(task, click.Group) and isinstance(users, click.Group)
    assert set(subcommands(task)) >= {"create", "list", "artifacts"}
    assert set(subcommands(users)) >= {"list", "create", "reset-password"}
    assert isinstance(cli, LazyGroup)
    assert cli.list_commands(click.Context(cli)) == sorted(root)


NO_GATEWAY = textwrap.dedent(
    """
    import contextlib, io, sys
    from cynork import _entry

    run = _entry.import_commands()
    codes = []
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        for argv in (["--help"], ["task", "artifacts", "--help"], ["--version"], ["nope"]):
            codes.append(run(argv))
    print(codes, [m for m in ("cynork._client", "socket", "ssl", "yaml") if m in sys.modules])
    run(["--gateway-url", "http://127.0.0.1:9", "version"])
    print("cynork._client" in sys.modules, "ssl" in sys.modules)
    """
)


def test_what_never_talks_to_the_gateway_loads_no_http_client(tmp_path: Path) -> None:
    """Help (which imports every command module to list it), --version and a usage
    error start without the HTTP client; a command that talks to the
    gateway loads it."""
    done = subprocess.run(
        [str(PYTHON), "-c", NO_GATEWAY], env=_env(tmp_path), capture_output=True, timeout=WAIT
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert lines[0] == "[0, 0, 0, 2] []"
    assert lines[-1] == "True False" and "gateway_version=unreachable" in lines[1]


def test_a_lazy_name_that_is_not_its_command_fails_loudly() -> None:
    from cynork.commands import LazyGroup

    group = LazyGroup("g", lazy={"create": "task_list:command", "gone": "task_list:nope"})
    ctx = click.Context(group)
    with pytest.raises(RuntimeError, match="task_list:command is not the command 'create'"):
        group.get_command(ctx, "create")
    with pytest.raises(RuntimeError, match="task_list:nope is not the command 'gone'"):
        group.get_command(ctx, "gone")
    assert group.get_command(ctx, "other") is None


def test_a_load_off_the_main_thread_imports_without_the_handler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only the main thread may set a signal handler; elsewhere `load` still imports,
    and leaves Python's handler alone."""
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            _entry.load("colorsys")
        except BaseException as exc:  # pragma: no cover - the failure being tested for
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(WAIT)
    assert errors == [] and "colorsys" in sys.modules
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_load_on_the_main_thread_guards_then_restores_the_handler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    during: list[object] = []

    class Spy:
        def find_spec(self, name: str, path: object = None, target: object = None) -> None:
            if name == "colorsys":
                during.append(signal.getsignal(signal.SIGINT))

    monkeypatch.setattr(sys, "meta_path", [Spy(), *sys.meta_path])
    _entry.load("colorsys")
    assert during == [_entry._interrupted_while_starting] and "colorsys" in sys.modules
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
