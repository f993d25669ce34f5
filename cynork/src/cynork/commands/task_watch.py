"""`cynork task watch ID`: redraw the task's state every INTERVAL seconds until terminal."""

from __future__ import annotations

import time

import click

from cynork._api import JSONDict
from cynork._app import get_app, output_option, task_id_argument
from cynork._output import format_kv
from cynork._waiting import interrupted, is_terminal

CLEAR_SCREEN = "\x1b[H\x1b[2J"
STATUS_KEYS = ("task_id", "task_name", "status", "reason")


def _snapshot(result: JSONDict) -> tuple[object, ...]:
    return (
        result.get("status"),
        result.get("stdout"),
        result.get("stderr"),
        len(result.get("jobs") or []),
    )


@click.command("watch")
@task_id_argument
@click.option(
    "-n",
    "--interval",
    type=click.FloatRange(min=1.0),
    default=2.0,
    show_default=True,
    help="Seconds between refreshes (at least 1).",
)
@click.option("--no-clear", is_flag=True, help="Append updates instead of redrawing the screen.")
@output_option
def command(task_id: str, interval: float, no_clear: bool) -> None:
    """Follow a task until it is terminal (Ctrl-C stops watching, not the task)."""
    app = get_app()
    client = app.client()
    # Redrawing only makes sense on a screen; piped output gets appended lines.
    redraw = not no_clear and app.stdout_is_tty() and not app.output.is_json and app.output.color
    last: tuple[object, ...] | None = None
    try:
        while True:
            result = client.task_result(task_id)
            snap = _snapshot(result)
            done = is_terminal(result)
            if redraw:
                click.echo(CLEAR_SCREEN, nl=False, color=True)
                stamp = time.strftime("%H:%M:%S")
                click.echo(f"Every {interval:g}s: cynork task watch {task_id}    {stamp}\n")
                app.output.result(result)
            elif snap != last:
                if app.output.is_json:
                    app.output.json_event(result)
                elif done:
                    app.output.result(result)
                else:
                    app.output.recent.note(result)
                    click.echo(format_kv(result, STATUS_KEYS))
            last = snap
            if done:
                return
            app.sleep(interval)
    except KeyboardInterrupt:
        raise interrupted(task_id) from None
