"""One command per module, Nomad `command/` style (the admin groups `users`, `nodes` and
`audit` keep each group's commands in one module); `register` wires them to the root."""

from __future__ import annotations

import click

from cynork.commands import (
    audit,
    auth_login,
    auth_logout,
    auth_refresh,
    auth_whoami,
    chat,
    completion,
    models_list,
    nodes,
    shell,
    status,
    task_artifacts,
    task_cancel,
    task_create,
    task_delete,
    task_get,
    task_list,
    task_logs,
    task_result,
    task_watch,
    users,
    version,
)

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}


@click.group(context_settings=CONTEXT_SETTINGS)
def auth() -> None:
    """Log in, log out, and show who is logged in."""


@click.group(context_settings=CONTEXT_SETTINGS)
def models() -> None:
    """The models of the connected nodes."""


@click.group(context_settings=CONTEXT_SETTINGS)
def task() -> None:
    """Create, list, follow, cancel and delete tasks."""


@click.group("users", context_settings=CONTEXT_SETTINGS)
def users_group() -> None:
    """Manage users (administrators only)."""


@click.group("nodes", context_settings=CONTEXT_SETTINGS)
def nodes_group() -> None:
    """Inspect nodes and take them out of service (administrators only)."""


@click.group("audit", context_settings=CONTEXT_SETTINGS)
def audit_group() -> None:
    """Read the audit log (administrators only)."""


def register(root: click.Group) -> None:
    for module in (auth_login, auth_logout, auth_whoami, auth_refresh):
        auth.add_command(module.command)
    for module in (
        task_create,
        task_list,
        task_get,
        task_result,
        task_watch,
        task_logs,
        task_cancel,
        task_delete,
    ):
        task.add_command(module.command)
    task.add_command(task_artifacts.group)
    root.add_command(version.command)
    root.add_command(status.command)
    root.add_command(auth)
    root.add_command(task)
    for group, commands in (
        (users_group, users.COMMANDS),
        (nodes_group, nodes.COMMANDS),
        (audit_group, audit.COMMANDS),
    ):
        for command in commands:
            group.add_command(command)
        root.add_command(group)
    models.add_command(models_list.command)
    root.add_command(models)
    root.add_command(chat.command)
    root.add_command(completion.command)
    root.add_command(shell.command)
