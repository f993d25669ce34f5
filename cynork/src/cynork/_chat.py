"""A chat with a model through the gateway's OpenAI door (SPEC §5.5): one question
(`-m`), or an interactive conversation kept for the session.

In the conversation, Enter sends and Esc then Enter (or Alt+Enter) starts a new line;
`/model NAME` switches model, `/clear` forgets the conversation, `/exit` (or Ctrl-D)
leaves. Ctrl-C while an answer is arriving stops that answer, not the chat; the part
already printed stays in the conversation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from prompt_toolkit import PromptSession
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent

from cynork._api import JSONDict
from cynork._app import App
from cynork._errors import CynorkError, UsageError, show_error

HELP = "Enter sends; Esc Enter: new line; /model NAME, /clear, /exit (or Ctrl-D)."


def pick_model(app: App, model: str | None) -> str:
    """`model`, else the first model the gateway lists."""
    if model:
        return model
    names = [str(m.get("id")) for m in app.client().list_models().get("data", [])]
    if not names:
        raise UsageError("no model is served by a connected node (cynork models list)")
    return names[0]


class Conversation:
    def __init__(self, app: App, model: str, *, plain: bool) -> None:
        self.app = app
        self.model = model
        self.plain = plain
        self.messages: list[dict[str, str]] = []

    def body(self) -> JSONDict:
        return {"model": self.model, "messages": list(self.messages)}

    def ask(self, text: str, write: Callable[[str], None]) -> str:
        """Streams the answer through `write`; returns what arrived (all of it, or what
        came before Ctrl-C)."""
        self.messages.append({"role": "user", "content": text})
        parts: list[str] = []
        try:
            for chunk in self.app.client().chat_stream(self.body()):
                for choice in chunk.get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content") or ""
                    if piece:
                        parts.append(piece)
                        write(piece)
        except KeyboardInterrupt:
            write("\n[stopped]")
        except CynorkError:
            self.messages.pop()
            raise
        answer = "".join(parts)
        self.messages.append({"role": "assistant", "content": answer})
        return answer


def one_shot(app: App, model: str, text: str, *, plain: bool) -> None:
    chat = Conversation(app, model, plain=plain)
    if app.output.is_json:
        chat.messages.append({"role": "user", "content": text})
        app.output.json_line(app.client().chat(chat.body()))
        return
    answer = chat.ask(text, lambda piece: click.echo(piece, nl=False))
    if not answer.endswith("\n"):
        click.echo("")


def _bindings() -> KeyBindings:
    keys = KeyBindings()

    @keys.add("enter")
    def _send(event: KeyPressEvent) -> None:
        event.current_buffer.validate_and_handle()

    @keys.add("escape", "enter")
    def _newline(event: KeyPressEvent) -> None:
        event.current_buffer.insert_text("\n")

    return keys


def interactive(app: App, model: str, *, plain: bool, session: Any = None) -> None:
    chat = Conversation(app, model, plain=plain)
    prompt: Any = session or PromptSession(
        history=InMemoryHistory(), multiline=True, key_bindings=_bindings()
    )
    if not app.output.quiet:
        click.echo(f"chat with {model}. {HELP}", err=True)
    while True:
        try:
            text = prompt.prompt("you> " if plain else f"you ({chat.model})> ")
        except KeyboardInterrupt:
            continue  # Ctrl-C at the prompt clears the line
        except EOFError:
            return
        text = text.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return
        if text == "/clear":
            chat.messages.clear()
            click.echo("(conversation cleared)", err=True)
            continue
        if text.startswith("/model"):
            name = text[len("/model") :].strip()
            if not name:
                click.echo(f"model: {chat.model}", err=True)
            else:
                chat.model = name
                click.echo(f"(model: {name})", err=True)
            continue
        if not plain:
            click.secho(f"{chat.model}> ", nl=False, bold=True, color=app.output.color)
        try:
            chat.ask(text, lambda piece: click.echo(piece, nl=False))
        except CynorkError as exc:
            click.echo("")
            show_error(exc)
            continue
        click.echo("")
