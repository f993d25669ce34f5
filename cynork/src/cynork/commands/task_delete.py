"""`cynork task delete ID|NAME`: remove an ended task with its outputs and artifacts;
asks first unless -y."""

from __future__ import annotations

import click

from cynork._app import get_app, output_option
from cynork._confirm import confirmed, yes_option


@click.command("delete")
@click.argument("task_id", metavar="ID|NAME")
@yes_option
@output_option
def command(task_id: str, yes: bool) -> None:
    """Delete an ended task: its jobs, their output and its artifacts go for good
    (the owner or an administrator; a task still running is exit 5: cancel it first)."""
    app = get_app()
    question = f"Delete task {task_id} with its output and artifacts? This cannot be undone."
    if not confirmed(question, yes):
        app.output.note(f"task {task_id} kept")
        return
    app.output.obj(app.client().delete_task(task_id), ("task_id", "deleted"))
