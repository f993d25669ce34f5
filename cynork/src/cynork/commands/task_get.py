"""`cynork task get ID`: one task, by ULID or name."""

from __future__ import annotations

import click

from cynork._app import get_app, output_option, task_id_argument


@click.command("get")
@task_id_argument
@output_option
def command(task_id: str) -> None:
    """Show one task (ID is the ULID or the task name)."""
    app = get_app()
    app.output.obj(app.client().get_task(task_id))
