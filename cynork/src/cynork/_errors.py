"""Errors that end a command with one readable line and a documented exit code.

Every failure a user can cause or meet (bad flag, bad file, unreachable gateway, expired
session, missing task) is a `CynorkError`; click prints it with `show()` and exits with
its `exit_code`, and the shell prints it and carries on. The codes are upstream's
(SPEC §5.3); when several could apply, the first check to fail decides, and the checks
run in the order usage, auth, request, response.
"""

from __future__ import annotations

from typing import IO, Any

import click

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_NOT_FOUND = 4
EXIT_CONFLICT = 5
EXIT_VALIDATION = 6
EXIT_GATEWAY = 7
EXIT_INTERNAL = 8
EXIT_INTERRUPTED = 130
# 128 + SIGPIPE, what a shell reports for `yes | head`: the reader of stdout left.
EXIT_BROKEN_PIPE = 141


class CynorkError(click.ClickException):
    """A failure reported as `cynork: <message>` on stderr; by itself an internal one."""

    exit_code = EXIT_INTERNAL

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


class GatewayError(CynorkError):
    """The gateway could not be reached, timed out, failed (5xx) or answered nonsense
    (exit 7)."""

    exit_code = EXIT_GATEWAY


# The name before exit codes 5-8 split exit 1; kept for code that imports it.
ServerError = GatewayError


class UsageError(CynorkError):
    """Bad flags or values, a bad input file or config file, conflicting flags (exit 2)."""

    exit_code = EXIT_USAGE


class AuthError(CynorkError):
    """Not logged in, or the gateway refused the credentials: 401, 403 (exit 3)."""

    exit_code = EXIT_AUTH


class NotFoundError(CynorkError):
    """The task (or other object) does not exist for this user (exit 4)."""

    exit_code = EXIT_NOT_FOUND


class ConflictError(CynorkError):
    """The request conflicts with the object's state: 409 (exit 5)."""

    exit_code = EXIT_CONFLICT


class ValidationError(CynorkError):
    """The gateway refused the request's content: 400, 413, 422 (exit 6)."""

    exit_code = EXIT_VALIDATION


class InternalError(CynorkError):
    """cynork itself failed before any request (exit 8)."""

    exit_code = EXIT_INTERNAL


class Interrupted(CynorkError):
    """The user pressed Ctrl-C while the command waited (exit 130)."""

    exit_code = EXIT_INTERRUPTED
