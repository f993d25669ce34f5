"""`cynork status`: gateway health and readiness on one line; exit 0 only when both ok."""

from __future__ import annotations

import click

from cynork._app import get_app, output_option
from cynork._errors import EXIT_SERVER, CynorkError


def _prefixed(prefix: str, text: str) -> str:
    """One line: a multi-line readyz body becomes `not ready: missing: …; …`."""
    parts = [line.strip() for line in text.splitlines() if line.strip()]
    if parts and parts[0].lower() == prefix:
        parts = parts[1:]
    return f"{prefix}: {'; '.join(parts)}" if parts else prefix


@click.command("status")
@output_option
@click.pass_context
def command(ctx: click.Context) -> None:
    """Check the gateway's /healthz and /readyz."""
    app = get_app()
    client = app.client()
    info: dict[str, str | bool] = {"gateway_url": app.settings.gateway_url}
    try:
        healthy, health_text = client.healthz()
        ready, ready_text = client.readyz()
    except CynorkError as exc:
        healthy = ready = False
        health_text = ready_text = "unreachable"
        info["error"] = exc.format_message()
    info["health"] = health_text if healthy else _prefixed("not ok", health_text)
    info["ready"] = ready_text if ready else _prefixed("not ready", ready_text)
    if health_text == "unreachable":
        info["health"] = info["ready"] = "unreachable"
    info["ok"] = healthy and ready
    app.output.obj(info)
    if not info["ok"]:
        ctx.exit(EXIT_SERVER)
