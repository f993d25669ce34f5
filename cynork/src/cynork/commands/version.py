"""`cynork version`: `version=<client>`, then the gateway's version when it answers."""

from __future__ import annotations

import click

from cynork import __version__
from cynork._app import get_app, output_option
from cynork._errors import CynorkError


@click.command("version")
@output_option
def command() -> None:
    """Print version=… (the client's) and gateway_version=…."""
    app = get_app()
    info: dict[str, str] = {"version": __version__}
    try:
        info["gateway_version"] = app.client().server_version() or "unknown"
    except CynorkError:
        # An unreachable gateway is not a failure of `version`; say so and go on.
        info["gateway_version"] = "unreachable"
    app.output.obj(info)
