"""`cynork auth login`: exchange a user name and password for tokens and store them."""

from __future__ import annotations

import sys

import click

from cynork._app import get_app, output_option
from cynork._errors import UsageError


def _read_password_stdin() -> str:
    line = sys.stdin.readline()
    password = line.rstrip("\r\n")
    if not password:
        raise UsageError("--password-stdin: no password on standard input")
    return password


@click.command("login")
@click.option(
    "-u",
    "--user",
    # --handle: this command's flag before upstream's name; hidden, still accepted.
    "--handle",
    "user",
    default=None,
    help="User name (prompted as `User:` when omitted).",
)
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input (needs -u).",
)
@output_option
def command(user: str | None, password_stdin: bool) -> None:
    """Log in; prints logged_in=true user=…; the tokens go into the config file (0600)."""
    app = get_app()
    if not user:
        if password_stdin:
            # Both would come from stdin; which line is which would be a guess.
            raise UsageError("--password-stdin needs -u/--user")
        user = str(click.prompt("User", default=app.user() or None, err=True))
    if password_stdin:
        password = _read_password_stdin()
    else:
        password = str(click.prompt("Password", hide_input=True, err=True))
    body = app.client().login(user, password)
    app.config.update({"user": user, "handle": None})
    app.output.obj(
        {
            "logged_in": True,
            "user": user,
            "gateway_url": app.settings.gateway_url,
            "expires_in": body.get("expires_in"),
        }
    )
