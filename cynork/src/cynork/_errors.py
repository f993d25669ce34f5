"""Errors that end a command with one readable line and a documented exit code.

Every failure a user can cause or meet (bad flag, bad file, unreachable gateway, expired
session, missing task) is a `CynorkError`; click prints it with `show()` and exits with
its `exit_code`, and the shell prints it and carries on.
"""

from __future__ import annotations

from typing import IO, Any

import click

EXIT_OK = 0
EXIT_SERVER = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_NOT_FOUND = 4
EXIT_INTERRUPTED = 130


class CynorkError(click.ClickException):
    """A failure reported as `cynork: <message>` on stderr."""

    exit_code = EXIT_SERVER

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"cynork: {_one_line(self)}", file=file, err=file is None)


def _one_line(exc: click.ClickException) -> str:
    # One line, always: a multi-line server detail would read like a traceback.
    return " ".join(exc.format_message().split())


def show_error(exc: click.ClickException) -> None:
    """Any click error as one stderr line: click's own usage errors print a usage block,
    a hint and a blank line, which SPEC §5's "one readable line" rules out."""
    line = _one_line(exc)
    # Only click's usage errors carry a context (CynorkError is not one): they get a hint.
    ctx = exc.ctx if isinstance(exc, click.UsageError) else None
    if ctx is not None:
        line += f" (see `{ctx.command_path} --help`)"
    click.echo(f"cynork: {line}", err=True)


class ServerError(CynorkError):
    """The gateway answered with an error, or could not be reached (exit 1)."""

    exit_code = EXIT_SERVER


class UsageError(CynorkError):
    """Bad flags, a bad input file or a request over a limit (exit 2)."""

    exit_code = EXIT_USAGE


class AuthError(CynorkError):
    """Not logged in, or the gateway refused the credentials (exit 3)."""

    exit_code = EXIT_AUTH


class NotFoundError(CynorkError):
    """The task (or other object) does not exist for this user (exit 4)."""

    exit_code = EXIT_NOT_FOUND


class Interrupted(CynorkError):
    """The user pressed Ctrl-C while the command waited (exit 130)."""

    exit_code = EXIT_INTERRUPTED
