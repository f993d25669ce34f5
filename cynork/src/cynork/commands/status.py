"""`cynork status`: `gateway=ok` when /healthz answers, with readiness beside it.

Exit 0 only when the gateway is healthy and ready; 7 otherwise (SPEC §5.3).
"""

from __future__ import annotations

import click

from cynork._app import get_app, output_option
from cynork._errors import EXIT_GATEWAY, CynorkError


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
    """Check the gateway's /healthz and /readyz: gateway=ok ready=ok."""
    app = get_app()
    client = app.client()
    info: dict[str, str] = {}
    try:
        healthy, health_text = client.healthz()
        ready, ready_text = client.readyz()
    except CynorkError as exc:
        info = {"gateway": "unreachable", "ready": "unreachable"}
        info["gateway_url"] = app.settings.gateway_url
        app.output.obj(info)
        click.echo(f"cynork: {exc.format_message()}", err=True)
        ctx.exit(EXIT_GATEWAY)
    info["gateway"] = "ok" if healthy else _prefixed("not ok", health_text)
    info["ready"] = "ok" if ready else _prefixed("not ready", ready_text)
    info["gateway_url"] = app.settings.gateway_url
    app.output.obj(info)
    if not (healthy and ready):
        ctx.exit(EXIT_GATEWAY)
