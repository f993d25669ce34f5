"""One command per module, Nomad `command/` style (the admin groups `users`, `nodes` and
`audit` keep each group's commands in one module); `register` wires them to the root.

A command's module is imported when a command line names it (or help lists it), not
at start: `cynork task create` loads `task_create` and what it uses, not the twenty
other modules and what they pull in (click's shell completion, the download and
password helpers): ~5 % of a start (docs/fast-path.md §7). Code that needs the whole
tree (the shell's completer, tests) asks `subcommands`, never `Group.commands`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, MutableMapping
from typing import Any

import click

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}


class LazyGroup(click.Group):
    """A group whose commands are named up front as `module:attribute` (a module of
    `cynork.commands`) and imported the first time click or a caller asks for them."""

    def __init__(
        self, name: str | None = None, *, lazy: Mapping[str, str] | None = None, **attrs: Any
    ) -> None:
        super().__init__(name, **attrs)
        self.lazy: dict[str, str] = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            self._load(cmd_name)
        return self.commands.get(cmd_name)

    def _load(self, name: str) -> None:
        module, _, attribute = self.lazy[name].partition(":")
        command = getattr(importlib.import_module(f"cynork.commands.{module}"), attribute, None)
        if not isinstance(command, click.Command) or command.name != name:
            raise RuntimeError(f"cynork.commands.{self.lazy[name]} is not the command {name!r}")
        self.add_command(command)

    def load_all(self) -> None:
        for name in self.lazy:
            if name not in self.commands:
                self._load(name)


def subcommands(group: click.Group) -> MutableMapping[str, click.Command]:
    """Every command of `group` by name, the lazy ones imported."""
    if isinstance(group, LazyGroup):
        group.load_all()
    return group.commands


@click.group(
    cls=LazyGroup,
    context_settings=CONTEXT_SETTINGS,
    lazy={
        "login": "auth_login:command",
        "logout": "auth_logout:command",
        "whoami": "auth_whoami:command",
        "refresh": "auth_refresh:command",
    },
)
def auth() -> None:
    """Log in, log out, and show who is logged in."""


@click.group(cls=LazyGroup, context_settings=CONTEXT_SETTINGS, lazy={"list": "models_list:command"})
def models() -> None:
    """The models of the connected nodes."""


@click.group(
    cls=LazyGroup,
    context_settings=CONTEXT_SETTINGS,
    lazy={
        "create": "task_create:command",
        "list": "task_list:command",
        "get": "task_get:command",
        "result": "task_result:command",
        "watch": "task_watch:command",
        "logs": "task_logs:command",
        "cancel": "task_cancel:command",
        "delete": "task_delete:command",
        "artifacts": "task_artifacts:group",
    },
)
def task() -> None:
    """Create, list, follow, cancel and delete tasks."""


# The root's own commands besides the groups above.
ROOT_LAZY = {
    "version": "version:command",
    "status": "status:command",
    "users": "users:group",
    "nodes": "nodes:group",
    "audit": "audit:group",
    "chat": "chat:command",
    "completion": "completion:command",
    "shell": "shell:command",
}


def register(root: LazyGroup) -> None:
    for group in (auth, task, models):
        root.add_command(group)
    root.lazy.update(ROOT_LAZY)
