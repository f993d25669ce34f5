"""`cynork task logs ID`: the last job's output; -F follows the watch stream.

`--stream all` (the default) sends the job's stdout to stdout and its stderr to stderr,
as `task result` does; naming one stream prints its lines on stdout.
"""

from __future__ import annotations

import click

from cynork._api import LOG_STREAMS
from cynork._app import get_app, output_option, task_id_argument
from cynork._waiting import interrupted


@click.command("logs")
@task_id_argument
@click.option(
    "--stream",
    type=click.Choice(LOG_STREAMS),
    default="all",
    show_default=True,
    help="Which output stream; all: stdout to stdout and stderr to stderr.",
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
        elif stream == "all":
            app.output.text(str(logs.get("stdout") or ""))
            app.output.text(str(logs.get("stderr") or ""), err=True)
        else:
            for line in logs["lines"]:
                click.echo(line)
        return
    try:
        for event in client.watch_task(task_id):
            if app.output.is_json:
                app.output.json_event(event)
            elif event.get("chunk") and stream in (event.get("stream"), "all"):
                to_stderr = stream == "all" and event.get("stream") == "stderr"
                click.echo(str(event["chunk"]), nl=False, err=to_stderr)
    except KeyboardInterrupt:
        raise interrupted(task_id) from None
