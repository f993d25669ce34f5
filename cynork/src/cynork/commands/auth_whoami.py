"""`cynork auth whoami`: the user behind the stored token."""

from __future__ import annotations

import click

from cynork._app import get_app, output_option

USER_KEYS = ("id", "user", "email", "is_active", "is_admin")


@click.command("whoami")
@output_option
def command() -> None:
    """Print id=… user=… of the logged-in user (exit 3 when not logged in)."""
    app = get_app()
    me = app.client().whoami()
    # Upstream names the user `user`; the gateway's field is `handle` (kept in JSON).
    shown = {"id": me.get("id"), "user": me.get("handle"), **me}
    app.output.obj(shown, USER_KEYS)
