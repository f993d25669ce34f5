"""`cynork shell`: the interactive shell, or with -c one line of it."""

from __future__ import annotations

import click

from cynork._app import get_app


@click.command("shell")
@click.option(
    "-c",
    "--command",
    "line",
    default=None,
    metavar="LINE",
    help='Run one shell line (e.g. "task list") and exit with its code.',
)
@click.pass_context
def command(ctx: click.Context, line: str | None) -> None:
    """Open the interactive shell (commands without the `cynork` prefix)."""
    app = get_app()
    if app.seams.in_shell:
        raise click.UsageError("already in the cynork shell")
    if line is not None:
        from cynork._shell import run_line

        ctx.exit(run_line(app, ctx.find_root().command, line))
    from cynork._shell import run_shell

    run_shell(app, ctx.find_root().command)
