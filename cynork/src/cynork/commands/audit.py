"""`cynork audit list`: the audit log, newest first, for administrators (SPEC §5.2)."""

from __future__ import annotations

import click

from cynork._app import get_app, output_option
from cynork.commands import CONTEXT_SETTINGS

LINE_KEYS = ("at", "action", "outcome", "handle", "user_id", "node_id", "client", "id")


@click.command("list")
@click.option("--action", default=None, help="Only this action (login, user_disable, …).")
@click.option("--outcome", default=None, help="Only this outcome (ok, failure, denied, …).")
@click.option("--user-id", default=None, help="Only events of this user id.")
@click.option("--handle", default=None, help="Only events with this handle.")
@click.option("--node-id", default=None, help="Only events about this node id.")
@click.option("--since", default=None, metavar="TIME", help="Only at or after (RFC 3339).")
@click.option("-l", "--limit", type=click.IntRange(1, 500), default=None, help="At most N.")
@click.option("--cursor", default=None, help="The next_cursor of a previous page.")
@output_option
def list_command(
    action: str | None,
    outcome: str | None,
    user_id: str | None,
    handle: str | None,
    node_id: str | None,
    since: str | None,
    limit: int | None,
    cursor: str | None,
) -> None:
    """List audit events; a last line next_cursor=… tells there are more."""
    app = get_app()
    given = {
        "action": action,
        "outcome": outcome,
        "user_id": user_id,
        "handle": handle,
        "node_id": node_id,
        "since": since,
        "limit": limit,
        "cursor": cursor,
    }
    page = app.client().list_audit({k: v for k, v in given.items() if v})
    if app.output.is_json:
        app.output.json_line(page)
        return
    for event in page["events"]:
        detail = event.get("detail") or {}
        app.output.obj({**event, **({"detail": detail} if detail else {})}, (*LINE_KEYS, "detail"))
    if page.get("next_cursor"):
        app.output.obj({"next_cursor": page["next_cursor"]})


COMMANDS = (list_command,)


@click.group("audit", context_settings=CONTEXT_SETTINGS, commands=COMMANDS)
def group() -> None:
    """Read the audit log (administrators only)."""
