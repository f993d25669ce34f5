"""`cynork shell`: the interactive prompt (also what bare `cynork` opens on a terminal)."""

from __future__ import annotations

import click

from cynork._app import get_app


@click.command("shell")
@click.pass_context
def command(ctx: click.Context) -> None:
    """Open the interactive shell (commands without the `cynork` prefix)."""
    app = get_app()
    if app.seams.in_shell:
        raise click.UsageError("already in the cynork shell")
    from cynork._shell import run_shell

    run_shell(app, ctx.find_root().command)
