"""`cynork nodes …`: the fleet, for administrators (SPEC §5.2). A node is named by id or
slug; a non-admin gets exit 3 (403)."""

from __future__ import annotations

import click

from cynork._app import get_app, output_option
from cynork._confirm import confirmed, yes_option
from cynork.commands import CONTEXT_SETTINGS

LINE_KEYS = (
    "node_id",
    "node_slug",
    "status",
    "admin_state",
    "running_jobs",
    "max_concurrency",
    "inference_supported",
    "last_heartbeat_at",
    "config_version",
)
NODE_ARGUMENT = click.argument("node", metavar="NODE")


@click.command("list")
@output_option
def list_command() -> None:
    """List every node with its status, one line each."""
    app = get_app()
    page = app.client().list_nodes()
    if app.output.is_json:
        app.output.json_line(page)
        return
    for node in page["nodes"]:
        app.output.obj(node, LINE_KEYS)


@click.command("get")
@NODE_ARGUMENT
@output_option
def get_command(node: str) -> None:
    """Show one node."""
    app = get_app()
    found = app.client().get_node(node)
    if app.output.is_json:
        app.output.json_line(found)
        return
    app.output.obj(found, LINE_KEYS)


def _acting(name: str, action: str, question: str | None, doc: str) -> click.Command:
    @click.command(name, help=doc)
    @NODE_ARGUMENT
    @yes_option
    @output_option
    def command(node: str, yes: bool) -> None:
        app = get_app()
        if question and not confirmed(question.format(node=node), yes):
            app.output.note(f"node {node} left as it was")
            return
        app.output.obj(app.client().node_action(node, action))

    return command


drain_command = _acting(
    "drain",
    "drain",
    "Drain node {node}? It takes no new work; what it runs finishes.",
    'No new work for a node; its running jobs finish ({"node_id": …, "drained": true}).',
)
disable_command = _acting(
    "disable",
    "disable",
    "Disable node {node}? It takes no new work and its running jobs are requeued.",
    "No new work for a node, and its running jobs are requeued elsewhere.",
)
enable_command = _acting(
    "enable", "enable", None, "Let a drained or disabled node take work again."
)
refresh_command = _acting(
    "refresh-config",
    "refresh_config",
    "Push the configuration to node {node} again?",
    "Issue a node's configuration again and tell the node to apply it.",
)

COMMANDS = (
    list_command,
    get_command,
    drain_command,
    disable_command,
    enable_command,
    refresh_command,
)


@click.group("nodes", context_settings=CONTEXT_SETTINGS, commands=COMMANDS)
def group() -> None:
    """Inspect nodes and take them out of service (administrators only)."""
