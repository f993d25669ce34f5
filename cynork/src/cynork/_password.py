"""A new password for someone else's account: prompted twice without echo, or the first
line of standard input with --password-stdin (never a flag: it would land in history)."""

from __future__ import annotations

import sys

import click

from cynork._errors import UsageError


def new_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise UsageError("--password-stdin: no password on standard input")
        return password
    return str(click.prompt("New password", hide_input=True, confirmation_prompt=True, err=True))


def password_stdin_option(func: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--password-stdin",
        is_flag=True,
        help="Read the password from the first line of standard input.",
    )(func)
