"""`cynork users …`: local accounts, for administrators (SPEC §5.2). A user is named by
id or handle; a non-admin gets exit 3 (403)."""

from __future__ import annotations

import click

from cynork._app import get_app, output_option
from cynork._confirm import confirmed, yes_option
from cynork._password import new_password, password_stdin_option
from cynork.commands import CONTEXT_SETTINGS

LINE_KEYS = ("id", "handle", "is_active", "is_admin", "weight", "email")
USER_ARGUMENT = click.argument("user", metavar="USER")


def _show(user: dict[str, object]) -> None:
    """One user: its line, then what applies to it (limits, use) in table mode."""
    app = get_app()
    if app.output.is_json:
        app.output.json_line(user)
        return
    flat: dict[str, object] = {k: user.get(k) for k in LINE_KEYS}
    for group in ("limits", "usage"):
        values = user.get(group)
        if isinstance(values, dict):
            flat.update(values)
    app.output.obj(flat)


@click.command("list")
@click.option("-l", "--limit", type=click.IntRange(1, 500), default=None, help="At most N.")
@click.option("--cursor", default=None, help="The next_cursor of a previous page.")
@output_option
def list_command(limit: int | None, cursor: str | None) -> None:
    """List users, oldest first; a last line next_cursor=… tells there are more."""
    app = get_app()
    page = app.client().list_users(limit=limit, cursor=cursor)
    if app.output.is_json:
        app.output.json_line(page)
        return
    for user in page["users"]:
        app.output.obj(user, LINE_KEYS)
    if page.get("next_cursor"):
        app.output.obj({"next_cursor": page["next_cursor"]})


@click.command("get")
@USER_ARGUMENT
@output_option
def get_command(user: str) -> None:
    """Show one user with the quotas that apply and their use."""
    _show(get_app().client().get_user(user))


@click.command("create")
@click.argument("handle")
@click.option("--email", default=None, help="The user's email address.")
@click.option("--admin", "is_admin", is_flag=True, help="An administrator.")
@password_stdin_option
@output_option
def create_command(handle: str, email: str | None, is_admin: bool, password_stdin: bool) -> None:
    """Create a user; the password is prompted (twice) unless --password-stdin."""
    body: dict[str, object] = {
        "handle": handle,
        "password": new_password(password_stdin),
        "is_admin": is_admin,
    }
    if email:
        body["email"] = email
    _show(get_app().client().create_user(body))


def _acting(name: str, action: str, question: str, declined: str, doc: str) -> click.Command:
    @click.command(name, help=doc)
    @USER_ARGUMENT
    @yes_option
    @output_option
    def command(user: str, yes: bool) -> None:
        app = get_app()
        if not confirmed(question.format(user=user), yes):
            app.output.note(declined.format(user=user))
            return
        app.output.obj(app.client().user_action(user, action))

    return command


disable_command = _acting(
    "disable",
    "disable",
    "Disable user {user}? Their sessions end and they cannot log in.",
    "user {user} left as it was",
    "Disable a user: their tokens stop working and login is refused.",
)
revoke_command = _acting(
    "revoke-sessions",
    "revoke_sessions",
    "End every session of user {user}?",
    "the sessions of {user} were left alone",
    "End every session of a user (they log in again).",
)


@click.command("enable")
@USER_ARGUMENT
@output_option
def enable_command(user: str) -> None:
    """Let a disabled user log in again."""
    app = get_app()
    app.output.obj(app.client().user_action(user, "enable"))


@click.command("reset-password")
@USER_ARGUMENT
@password_stdin_option
@yes_option
@output_option
def reset_password_command(user: str, password_stdin: bool, yes: bool) -> None:
    """Set a user's password; every session of theirs ends."""
    app = get_app()
    if not confirmed(f"Reset the password of user {user}? Their sessions end.", yes):
        app.output.note(f"the password of {user} was left as it was")
        return
    password = new_password(password_stdin)
    app.output.obj(app.client().user_action(user, "reset_password", {"password": password}))


COMMANDS = (
    list_command,
    get_command,
    create_command,
    disable_command,
    enable_command,
    reset_password_command,
    revoke_command,
)


@click.group("users", context_settings=CONTEXT_SETTINGS, commands=COMMANDS)
def group() -> None:
    """Manage users (administrators only)."""
