"""`cynork task result ID`: status, then the job's stdout/stderr once terminal."""

from __future__ import annotations

import click

from cynork._app import get_app, output_option, task_id_argument
from cynork._waiting import wait_for_result


@click.command("result")
@task_id_argument
@click.option("-w", "--wait", is_flag=True, help="Wait until the task is terminal.")
@output_option
def command(task_id: str, wait: bool) -> None:
    """Print the task's status and, once terminal, its output."""
    app = get_app()
    result = wait_for_result(app, task_id) if wait else app.client().task_result(task_id)
    app.output.result(result)
