"""`cynork auth logout`: revoke the session at the gateway and forget the tokens.

The tokens are forgotten even when the gateway cannot revoke the session (unreachable,
failing): the command then still succeeds, says `revoked=false`, and warns on stderr.
"""

from __future__ import annotations

import click

from cynork._app import get_app, output_option
from cynork._errors import CynorkError


@click.command("logout")
@output_option
def command() -> None:
    """Revoke the session and forget the stored tokens; prints logged_out=true."""
    app = get_app()
    if not app.settings.token and not app.settings.refresh_token:
        app.output.note("not logged in; nothing to do")
        app.output.obj({"logged_out": True})
        return
    try:
        app.client().logout()
    except CynorkError as exc:
        app.forget_tokens()
        app.output.warn(f"tokens forgotten, but the gateway did not revoke the session: {exc}")
        app.output.obj({"logged_out": True, "revoked": False})
        return
    app.forget_tokens()
    app.output.obj({"logged_out": True})
