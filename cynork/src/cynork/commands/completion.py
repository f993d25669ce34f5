"""`cynork completion bash|zsh|fish`: the shell completion script (click's own)."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

SHELLS = ("bash", "zsh", "fish")


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def command(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script for bash, zsh or fish.

    Load it with e.g. `eval "$(cynork completion bash)"`.
    """
    cls = get_completion_class(shell)
    if cls is None:  # pragma: no cover - click ships all three shells
        raise click.UsageError(f"no completion for {shell}")
    root = ctx.find_root().command
    click.echo(cls(root, {}, "cynork", "_CYNORK_COMPLETE").source())
