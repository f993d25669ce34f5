"""`cynork models list`: the models the caller may use on the connected nodes."""

from __future__ import annotations

import click

from cynork._app import get_app, output_option


@click.command("list")
@output_option
def command() -> None:
    """List the models of the connected nodes (GET /v1/models), one line each."""
    app = get_app()
    page = app.client().list_models()
    if app.output.is_json:
        app.output.json_line(page)
        return
    for item in page.get("data", []):
        if isinstance(item, dict):
            app.output.obj({"model": item.get("id"), "owned_by": item.get("owned_by")})
