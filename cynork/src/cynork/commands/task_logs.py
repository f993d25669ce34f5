"""`cynork task logs ID`: the last job's output lines; -F follows the watch stream."""

from __future__ import annotations

import click

from cynork._app import get_app, output_option, task_id_argument
from cynork._waiting import interrupted


@click.command("logs")
@task_id_argument
@click.option(
    "--stream",
    type=click.Choice(("stdout", "stderr")),
    default="stdout",
    show_default=True,
    help="Which output stream.",
)
@click.option("-F", "--follow", is_flag=True, help="Keep printing output until the task ends.")
@output_option
def command(task_id: str, stream: str, follow: bool) -> None:
    """Print a task's output lines."""
    app = get_app()
    client = app.client()
    if not follow:
        logs = client.task_logs(task_id, stream)
        if app.output.is_json:
            app.output.json_line(logs)
        else:
            for line in logs["lines"]:
                click.echo(line)
        return
    try:
        for event in client.watch_task(task_id):
            if app.output.is_json:
                app.output.json_line(event)
            elif event.get("stream") == stream and event.get("chunk"):
                click.echo(str(event["chunk"]), nl=False)
    except KeyboardInterrupt:
        raise interrupted(task_id) from None
