"""`cynork version`: the client's version, and the gateway's when it answers."""

from __future__ import annotations

import click

from cynork import __version__
from cynork._app import get_app, output_option
from cynork._errors import CynorkError


@click.command("version")
@output_option
def command() -> None:
    """Print the client and gateway versions."""
    app = get_app()
    info: dict[str, str | None] = {"client_version": __version__, "gateway_version": None}
    try:
        info["gateway_version"] = app.client().server_version() or "unknown"
    except CynorkError:
        # An unreachable gateway is not a failure of `version`; say so and go on.
        info["gateway_version"] = "unreachable"
    app.output.obj(info)
