"""`cynork task list`: the caller's tasks, newest first, one line each."""

from __future__ import annotations

import click

from cynork._api import TASK_STATUSES, JSONDict
from cynork._app import get_app, output_option

LINE_KEYS = ("task_id", "task_name", "status", "input_mode", "created_at", "reason")


@click.command("list")
@click.option("--status", type=click.Choice(TASK_STATUSES), default=None, help="Only this status.")
@click.option(
    "-l", "--limit", type=click.IntRange(1, 200), default=None, help="At most N tasks (max 200)."
)
@click.option("--cursor", default=None, help="The next_cursor of a previous page.")
@click.option(
    "--offset",
    type=click.IntRange(min=0),
    default=0,
    help="Skip the first N tasks (after --cursor, when given).",
)
@output_option
def command(status: str | None, limit: int | None, cursor: str | None, offset: int) -> None:
    """List tasks; a last line next_cursor=… tells there are more."""
    app = get_app()
    client = app.client()
    exhausted = False
    if offset:
        cursor = client.skip_tasks(offset, status=status, cursor=cursor)
        exhausted = cursor is None
    page: JSONDict = (
        {"tasks": [], "next_cursor": ""}
        if exhausted
        else client.list_tasks(status=status, limit=limit, cursor=cursor)
    )
    if app.output.is_json:
        app.output.json_line(page)
        return
    for item in page["tasks"]:
        app.output.obj(item, LINE_KEYS)
    if page.get("next_cursor"):
        app.output.obj({"next_cursor": page["next_cursor"]})
