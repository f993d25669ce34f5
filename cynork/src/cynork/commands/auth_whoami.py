"""`cynork auth whoami`: the user behind the stored token."""

from __future__ import annotations

import click

from cynork._app import get_app, output_option

USER_KEYS = ("id", "handle", "email", "is_active", "is_admin")


@click.command("whoami")
@output_option
def command() -> None:
    """Print id=… handle=… of the logged-in user (exit 3 when not logged in)."""
    app = get_app()
    user = app.client().whoami()
    app.output.obj(user, USER_KEYS)
