"""`cynork auth refresh`: rotate the token pair now."""

from __future__ import annotations

import click

from cynork._app import get_app, output_option


@click.command("refresh")
@output_option
def command() -> None:
    """Exchange the refresh token for a new pair (the old one stops working)."""
    app = get_app()
    body = app.client().refresh()
    app.output.obj({"refreshed": True, "expires_in": body.get("expires_in")})
