"""The `cynork` root group, its global options, and `main`, the console-script entry."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from cynork import __version__
from cynork._app import App, Seams
from cynork._errors import EXIT_BROKEN_PIPE, EXIT_INTERNAL, EXIT_INTERRUPTED, show_error
from cynork._output import OUTPUT_MODES, TABLE
from cynork.commands import LazyGroup, register

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(
    "cynork", cls=LazyGroup, context_settings=CONTEXT_SETTINGS, invoke_without_command=True
)
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),  # a str: cynork's paths are os.path (_config)
    default=None,
    help="Config file (default ~/.config/cynork/config.yaml).",
)
@click.option(
    "-o",
    "--output",
    "output_mode",
    type=click.Choice(OUTPUT_MODES),
    default=TABLE,
    show_default=True,
    help="table (key=value lines) or json: exactly one JSON value on stdout, "
    "pretty-printed when stdout is a terminal and compact when it is not "
    "(`task watch` and `task logs -F` print one compact value per event).",
)
@click.option(
    "-q",
    "--quiet",
    is_flag=True,
    help="Suppress non-essential output (progress, remarks); errors still go to stderr.",
)
@click.option(
    "--no-color",
    is_flag=True,
    help="No colours or other escape sequences (also when NO_COLOR is set).",
)
@click.option(
    "--gateway-url",
    default=None,
    metavar="URL",
    help="User gateway URL (env CYNORK_GATEWAY_URL; default http://localhost:12080).",
)
@click.option(
    "--ca-file",
    default=None,
    metavar="PATH",
    help="CA certificate(s) to verify an https gateway (env CYNODE_CA_FILE).",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="Allow sending credentials over plain http to a non-loopback host.",
)
@click.version_option(__version__, "-V", "--version", prog_name="cynork")
@click.pass_context
def cli(
    ctx: click.Context,
    config_path: str | None,
    output_mode: str,
    quiet: bool,
    no_color: bool,
    gateway_url: str | None,
    ca_file: str | None,
    insecure: bool,
) -> None:
    """cynork: run and follow tasks on a CyNode orchestrator."""
    seams = ctx.obj if isinstance(ctx.obj, Seams) else Seams()
    app = App(
        seams,
        config_path=config_path,
        gateway_url=gateway_url,
        output_mode=output_mode,
        ca_file=ca_file,
        insecure=insecure,
        quiet=quiet,
        no_color=no_color,
    )
    ctx.obj = app
    ctx.call_on_close(app.close)
    if ctx.invoked_subcommand is None and not ctx.resilient_parsing:
        if app.stdin_is_tty() and app.stdout_is_tty() and not seams.in_shell:
            from cynork._shell import run_shell

            run_shell(app, ctx.find_root().command)
        else:
            click.echo(ctx.get_help())


register(cli)


def main(argv: Sequence[str] | None = None, seams: Seams | None = None) -> int:
    """Runs one command line; every failure ends as one stderr line and an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        rv = cli.main(args=args, prog_name="cynork", obj=seams, standalone_mode=False)
    except click.ClickException as exc:
        show_error(exc)
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        # click turns Ctrl-C (and EOF at a prompt) into Abort after printing a newline.
        click.echo("cynork: interrupted", err=True)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `cynork task list | head`: the reader left; nothing useful is left to say.
        return EXIT_BROKEN_PIPE
    except OSError as exc:
        # Request failures are GatewayErrors already: this is a local file or terminal.
        click.echo(f"cynork: {exc.strerror or exc}", err=True)
        return EXIT_INTERNAL
    except Exception as exc:
        click.echo(f"cynork: unexpected error: {type(exc).__name__}: {exc}", err=True)
        return EXIT_INTERNAL
    return rv if isinstance(rv, int) else 0
