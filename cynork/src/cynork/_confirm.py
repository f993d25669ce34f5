"""Asking before a command changes something another person may depend on; `-y` skips it."""

from __future__ import annotations

import click

from cynork._errors import UsageError


def confirmed(question: str, yes: bool) -> bool:
    """True with `-y` or a yes; a script that gave neither (no answer on stdin) is a
    usage error rather than a guess."""
    if yes:
        return True
    try:
        return bool(click.confirm(question, default=False, err=True))
    except click.exceptions.Abort:
        raise UsageError(
            "no answer to the confirmation; pass -y to go ahead without asking"
        ) from None


def yes_option(func: click.decorators.FC) -> click.decorators.FC:
    return click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")(func)
