"""The interactive shell: a prompt-toolkit loop that feeds each line to the click group.

Each line runs as `cynork <global options> <line>` with `standalone_mode=False`, so a
failing command prints its one error line and the shell carries on. The completer walks
the click command tree itself (commands, subcommands, flags, choice values, file paths)
and offers task ids seen in this session plus those of one lazily fetched `task list`.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

import click
from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.output import Output as PTOutput

from cynork._app import App
from cynork._config import ConfigFile, history_path
from cynork._entry import load
from cynork._errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, CynorkError, show_error
from cynork.commands import subcommands

BUILTINS = ("help", "exit", "quit")
EXIT_WORDS = frozenset({"exit", "quit"})
# Options whose value is a local path: complete file names there.
PATH_OPTIONS = frozenset(
    {"task_file", "script", "commands_file", "attach", "config_path", "ca_file"}
)
TASK_ID_FETCH_LIMIT = 50


class TaskIdSource:
    """Task ids for completion: this session's, then one `task list` fetched on first use."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._fetched: list[str] | None = None

    def _fetch(self) -> list[str]:
        # A fresh App re-reads the config: a command in this shell may have rotated tokens.
        app = self._app.fresh()
        try:
            page = app.client().list_tasks(limit=TASK_ID_FETCH_LIMIT)
        except CynorkError:
            return []
        finally:
            app.close()
        ids: list[str] = []
        for item in page.get("tasks", []):
            if isinstance(item, dict):
                ids += [str(item[k]) for k in ("task_id", "task_name") if item.get(k)]
        return ids

    def ids(self) -> list[str]:
        if self._fetched is None:
            self._fetched = self._fetch()
        seen: dict[str, None] = {}
        for value in [*self._app.seams.recent.newest_first(), *self._fetched]:
            seen.setdefault(value, None)
        return list(seen)


def _split(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:  # an open quote while typing
        return text.split()


def _find_option(cmd: click.Command, word: str) -> click.Option | None:
    name = word.split("=", 1)[0]
    for param in cmd.params:
        if isinstance(param, click.Option) and name in (*param.opts, *param.secondary_opts):
            return param
    return None


def _option_names(cmd: click.Command) -> list[str]:
    names = ["--help"]
    for param in cmd.params:
        if isinstance(param, click.Option) and not param.hidden:
            names += [*param.opts, *param.secondary_opts]
    return sorted(set(names), key=lambda n: (n.startswith("--"), n))


class ShellCompleter(Completer):
    def __init__(self, root: click.Group, ids: TaskIdSource) -> None:
        self.root = root
        self.ids = ids
        self._paths = PathCompleter(expanduser=True)

    def _walk(self, words: list[str]) -> tuple[click.Command, click.Option | None, int]:
        """The command the words lead to, an option awaiting its value, positionals seen."""
        cmd: click.Command = self.root
        pending: click.Option | None = None
        positionals = 0
        for word in words:
            if pending is not None:
                pending = None
                continue
            if word.startswith("-"):
                opt = _find_option(cmd, word)
                if opt is not None and not opt.is_flag and "=" not in word:
                    pending = opt
                continue
            if isinstance(cmd, click.Group) and word in subcommands(cmd):
                cmd = subcommands(cmd)[word]
                continue
            positionals += 1
        return cmd, pending, positionals

    def _candidates(
        self, cmd: click.Command, pending: click.Option | None, positionals: int, current: str
    ) -> list[str]:
        if pending is not None:
            if isinstance(pending.type, click.Choice):
                return [str(c) for c in pending.type.choices]
            return []
        if current.startswith("-"):
            return _option_names(cmd)
        if isinstance(cmd, click.Group):
            names = [n for n, c in subcommands(cmd).items() if not c.hidden]
            return sorted(names) + (list(BUILTINS) if cmd is self.root else [])
        arguments = [p for p in cmd.params if isinstance(p, click.Argument)]
        if positionals < len(arguments):
            arg = arguments[positionals]
            if arg.name == "task_id":
                return self.ids.ids()
            if isinstance(arg.type, click.Choice):
                return [str(c) for c in arg.type.choices]
        return []

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterable[Completion]:
        text = document.text_before_cursor
        words = _split(text)
        if text and not text[-1].isspace() and words:
            current, before = words[-1], words[:-1]
        else:
            current, before = "", words
        if before and before[0] == "help":
            before = before[1:]
        cmd, pending, positionals = self._walk(before)
        if pending is not None and pending.name in PATH_OPTIONS:
            yield from self._paths.get_completions(Document(current), complete_event)
            return
        for candidate in self._candidates(cmd, pending, positionals, current):
            if candidate.startswith(current):
                yield Completion(candidate, start_position=-len(current))


def _history() -> History:
    path = Path(history_path())
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Prompts can be private: keep the history as closed as the config file.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    except OSError:
        return InMemoryHistory()
    return FileHistory(str(path))


def prompt_text(app: App) -> str:
    """`cynork user@host:port> `: who is logged in (read afresh: a `auth login` in this
    shell changes it) and which gateway the lines go to."""
    netloc = urlsplit(app.settings.gateway_url).netloc or app.settings.gateway_url
    try:
        user = ConfigFile.load(app.config.path).get("user") or app.user()
    except CynorkError:
        user = app.user()
    return f"cynork {user}@{netloc}> " if user else f"cynork {netloc}> "


class LineRunner:
    """Runs shell lines as cynork command lines; what `shell -c LINE` and the loop share."""

    def __init__(self, app: App, root: click.Group) -> None:
        self.app = app
        self.root = root
        self.seams = app.seams
        self.seams.in_shell = True
        self.seams.base_args = app.global_args()
        self.last_exit = 0

    def run_line(self, line: str) -> bool:
        """Runs one line; False means the shell should end."""
        try:
            words = shlex.split(line)
        except ValueError as exc:
            click.echo(f"cynork: {exc}", err=True)
            self.last_exit = EXIT_USAGE
            return True
        if not words:
            return True
        if words[0] in EXIT_WORDS:
            return False
        if words[0] == "cynork":  # a pasted full command line
            words = words[1:]
        if words and words[0] == "help":
            words = [*words[1:], "--help"]
        self.last_exit = self._dispatch(words)
        return True

    def _dispatch(self, words: list[str]) -> int:
        try:
            rv = self.root.main(
                args=[*self.seams.base_args, *words],
                prog_name="cynork",
                obj=self.seams,
                standalone_mode=False,
            )
        except click.ClickException as exc:
            show_error(exc)
            return exc.exit_code
        except click.exceptions.Abort:
            click.echo("aborted", err=True)
            return EXIT_INTERRUPTED
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            return EXIT_INTERRUPTED
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else EXIT_INTERNAL
        except Exception as exc:
            click.echo(f"cynork: unexpected error: {type(exc).__name__}: {exc}", err=True)
            return EXIT_INTERNAL
        return rv if isinstance(rv, int) else 0


class Shell(LineRunner):
    def __init__(
        self,
        app: App,
        root: click.Group,
        *,
        history: History | None = None,
        pt_input: Input | None = None,
        pt_output: PTOutput | None = None,
    ) -> None:
        super().__init__(app, root)
        self.completer = ShellCompleter(root, TaskIdSource(app))
        self.session: PromptSession[str] = PromptSession(
            lambda: prompt_text(self.app),
            completer=self.completer,
            history=history if history is not None else _history(),
            complete_while_typing=False,
            input=pt_input,
            output=pt_output,
        )

    def loop(self) -> None:
        self.app.output.note("cynork shell: `help` lists commands, Tab completes, Ctrl-D leaves.")
        while True:
            try:
                line = self.session.prompt()
            except KeyboardInterrupt:
                continue  # Ctrl-C drops the line being typed, not the shell
            except EOFError:
                break
            if not self.run_line(line):
                break
        self.app.output.note("bye")


def run_line(app: App, root: click.Command, line: str) -> int:
    """`cynork shell -c LINE`: that one line, its exit code."""
    if not isinstance(root, click.Group):  # pragma: no cover - the root is always a group
        raise TypeError("the shell needs the cynork group")
    # The HTTP client now, while the shell starts, not in its first command: a Ctrl-C
    # during that load ends the process (cynork._entry.load), which a shell should not.
    load("cynork._client")
    saved = (app.seams.in_shell, app.seams.base_args)
    try:
        runner = LineRunner(app, root)
        runner.run_line(line)
        return runner.last_exit
    finally:
        # The seams outlive this call in process (tests): leave them as they were.
        app.seams.in_shell, app.seams.base_args = saved


def run_shell(app: App, root: click.Command) -> None:
    if not isinstance(root, click.Group):  # pragma: no cover - the root is always a group
        raise TypeError("the shell needs the cynork group")
    # The HTTP client now, while the shell starts, not in its first command: a Ctrl-C
    # during that load ends the process (cynork._entry.load), which a shell should not.
    load("cynork._client")
    Shell(app, root, pt_input=app.seams.shell_input, pt_output=app.seams.shell_output).loop()
