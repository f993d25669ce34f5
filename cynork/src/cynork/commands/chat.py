"""`cynork chat`: talk to a model on the nodes through the gateway (SPEC §5.5)."""

from __future__ import annotations

import click

from cynork._app import get_app, output_option


@click.command("chat")
@click.option("-m", "--message", default=None, help="Ask one question, print the answer, exit.")
@click.option(
    "--model", default=None, help="Model to use (default: the first `cynork models list` shows)."
)
@click.option("--plain", is_flag=True, help="Only the text: no model name, no colour.")
@output_option
def command(message: str | None, model: str | None, plain: bool) -> None:
    """Chat with a model: interactive, or one question with -m (-o json: the whole
    completion object)."""
    from cynork._chat import interactive, one_shot, pick_model

    app = get_app()
    name = pick_model(app, model)
    if message is not None:
        one_shot(app, name, message, plain=plain)
        return
    if app.output.is_json:
        raise click.UsageError("-o json needs -m: the interactive chat prints text")
    interactive(app, name, plain=plain)
