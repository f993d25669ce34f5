"""One command per module, Nomad `command/` style; `register` wires them to the root."""

from __future__ import annotations

import click

from cynork.commands import (
    auth_login,
    auth_logout,
    auth_refresh,
    auth_whoami,
    chat,
    completion,
    models_list,
    shell,
    status,
    task_cancel,
    task_create,
    task_get,
    task_list,
    task_logs,
    task_result,
    task_watch,
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
    """Create, list, follow and cancel tasks."""


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
    ):
        task.add_command(module.command)
    root.add_command(version.command)
    root.add_command(status.command)
    root.add_command(auth)
    root.add_command(task)
    models.add_command(models_list.command)
    root.add_command(models)
    root.add_command(chat.command)
    root.add_command(completion.command)
    root.add_command(shell.command)
