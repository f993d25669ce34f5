"""`cynork auth login`: exchange a handle and password for tokens and store them."""

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
@click.option("-u", "--handle", default=None, help="Account handle (prompted when omitted).")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input.",
)
@output_option
def command(handle: str | None, password_stdin: bool) -> None:
    """Log in; the tokens go into the config file (mode 0600)."""
    app = get_app()
    if not handle:
        if password_stdin:
            raise UsageError("--password-stdin needs -u/--handle")
        handle = str(click.prompt("Handle", default=app.config.get("handle") or None, err=True))
    if password_stdin:
        password = _read_password_stdin()
    else:
        password = str(click.prompt("Password", hide_input=True, err=True))
    body = app.client().login(handle, password)
    app.config.update({"handle": handle})
    app.output.obj(
        {
            "logged_in": True,
            "handle": handle,
            "gateway_url": app.settings.gateway_url,
            "expires_in": body.get("expires_in"),
        }
    )
