"""`cynork task cancel ID`: stop a task; asks first unless -y."""

from __future__ import annotations

import click

from cynork._app import get_app, output_option, task_id_argument
from cynork._errors import UsageError


@click.command("cancel")
@task_id_argument
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@output_option
def command(task_id: str, yes: bool) -> None:
    """Cancel a task that is not terminal yet."""
    app = get_app()
    if not yes:
        try:
            confirmed = click.confirm(f"Cancel task {task_id}?", default=False, err=True)
        except click.exceptions.Abort:
            # End of input with no answer: a script forgot -y; do not guess.
            raise UsageError(
                "no answer to the confirmation; pass -y to cancel without asking"
            ) from None
        if not confirmed:
            app.output.note(f"task {task_id} left running")
            return
    app.output.obj(app.client().cancel_task(task_id), ("task_id", "canceled"))
