"""`cynork auth logout`: revoke the session at the gateway and forget the tokens."""

from __future__ import annotations

import click

from cynork._app import get_app, output_option
from cynork._errors import CynorkError
from cynork._output import note


@click.command("logout")
@output_option
def command() -> None:
    """Revoke the session and forget the stored tokens."""
    app = get_app()
    if not app.settings.token and not app.settings.refresh_token:
        note("not logged in; nothing to do")
        app.output.obj({"logged_out": True})
        return
    try:
        app.client().logout()
    except CynorkError as exc:
        # Keep no tokens we were asked to drop, but say the session may still be alive.
        app.forget_tokens()
        said = "tokens forgotten, but the gateway did not revoke the session"
        raise type(exc)(f"{said}: {exc.message}") from exc
    app.forget_tokens()
    app.output.obj({"logged_out": True})
