"""Per-invocation state shared by the commands: settings, output and the gateway client.

`Seams` is what a caller (a test, or the interactive shell) may swap: the HTTP transport,
the sleep used between polls, the environment, whether stderr/stdout count as terminals,
and the task ids remembered across shell commands. Nothing else is patched.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import click

from cynork._config import ConfigFile, Settings, default_config_path, resolve_settings
from cynork._entry import load
from cynork._output import OUTPUT_MODES, Output, RecentTaskIds

if TYPE_CHECKING:
    from cynork._client import GatewayClient
    from cynork._http import Transport

F = TypeVar("F", bound=Callable[..., Any])


class Seams:
    """A plain class, not a dataclass: see cynork._config."""

    def __init__(
        self,
        *,
        transport: Transport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        environ: Mapping[str, str] | None = None,
        stderr_tty: bool | None = None,
        stdout_tty: bool | None = None,
        stdin_tty: bool | None = None,
        recent: RecentTaskIds | None = None,
        in_shell: bool = False,
        base_args: list[str] | None = None,
        shell_input: Any = None,
        shell_output: Any = None,
    ) -> None:
        self.transport = transport
        self.sleep = sleep
        self.environ = environ
        # None means: ask the real stream.
        self.stderr_tty = stderr_tty
        self.stdout_tty = stdout_tty
        self.stdin_tty = stdin_tty
        self.recent = RecentTaskIds() if recent is None else recent
        self.in_shell = in_shell
        # The global options the shell was started with, replayed before each shell line.
        self.base_args: list[str] = [] if base_args is None else base_args
        # prompt-toolkit Input/Output for the shell; None means the real terminal.
        self.shell_input = shell_input
        self.shell_output = shell_output


class App:
    """What the root group resolved; commands reach it with `get_app()`."""

    def __init__(
        self,
        seams: Seams,
        *,
        config_path: str | None,
        gateway_url: str | None,
        output_mode: str,
        ca_file: str | None,
        insecure: bool,
        quiet: bool = False,
        no_color: bool = False,
    ) -> None:
        self.seams = seams
        self.options: dict[str, Any] = {
            "config_path": config_path,
            "gateway_url": gateway_url,
            "output_mode": output_mode,
            "ca_file": ca_file,
            "insecure": insecure,
            "quiet": quiet,
            "no_color": no_color,
        }
        self.config = ConfigFile.load(config_path or default_config_path())
        self.settings: Settings = resolve_settings(
            self.config,
            gateway_url=gateway_url,
            ca_file=ca_file,
            insecure=insecure,
            environ=seams.environ,
        )
        environ = os.environ if seams.environ is None else seams.environ
        # https://no-color.org: any non-empty NO_COLOR means no colour.
        color = not no_color and not environ.get("NO_COLOR")
        self.output = Output(
            output_mode, seams.recent, pretty=self.stdout_is_tty(), quiet=quiet, color=color
        )
        self._client: GatewayClient | None = None

    def fresh(self) -> App:
        """A new App with the same options, reading the config file again (new tokens)."""
        return App(self.seams, **self.options)

    def global_args(self) -> list[str]:
        """The global options this App came from, as command-line words."""
        args: list[str] = []
        if self.options["config_path"] is not None:
            args += ["--config", str(self.options["config_path"])]
        if self.options["gateway_url"]:
            args += ["--gateway-url", str(self.options["gateway_url"])]
        if self.options["ca_file"]:
            args += ["--ca-file", str(self.options["ca_file"])]
        if self.options["insecure"]:
            args.append("--insecure")
        if self.options["quiet"]:
            args.append("--quiet")
        if self.options["no_color"]:
            args.append("--no-color")
        if self.options["output_mode"] != "table":
            args += ["-o", str(self.options["output_mode"])]
        return args

    def client(self) -> GatewayClient:
        if self._client is None:
            # Loaded here, not at start: help, --version, usage errors and completion
            # never talk to the gateway (the client's socket and json, ~8 ms of CPU).
            load("cynork._client")
            from cynork._client import GatewayClient

            self._client = GatewayClient(
                self.settings.gateway_url,
                token=self.settings.token,
                refresh_token=self.settings.refresh_token,
                transport=self.seams.transport,
                on_tokens=self.save_tokens,
                ca_file=self.settings.ca_file,
                insecure=self.settings.insecure,
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def user(self) -> str | None:
        """The user last logged in with this config (`handle` before it was `user`)."""
        return self.config.get("user") or self.config.get("handle")

    def save_tokens(self, access: str, refresh: str) -> None:
        self.config.update(
            {"gateway_url": self.settings.gateway_url, "token": access, "refresh_token": refresh}
        )

    def forget_tokens(self) -> None:
        if self.config.exists():
            self.config.update({"token": None, "refresh_token": None})

    def sleep(self, seconds: float) -> None:
        self.seams.sleep(seconds)

    def stderr_is_tty(self) -> bool:
        return sys.stderr.isatty() if self.seams.stderr_tty is None else self.seams.stderr_tty

    def stdout_is_tty(self) -> bool:
        return sys.stdout.isatty() if self.seams.stdout_tty is None else self.seams.stdout_tty

    def stdin_is_tty(self) -> bool:
        return sys.stdin.isatty() if self.seams.stdin_tty is None else self.seams.stdin_tty


def get_app(ctx: click.Context | None = None) -> App:
    ctx = ctx or click.get_current_context()
    app = ctx.find_object(App)
    if app is None:  # a command invoked without the root group (never from the CLI)
        raise click.UsageError("cynork commands run under the `cynork` group")
    return app


def _set_output(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        get_app(ctx).output.mode = value


def output_option(func: F) -> F:
    """`-o/--output` on a subcommand too, so `cynork task list -o json` works."""
    return click.option(
        "-o",
        "--output",
        type=click.Choice(OUTPUT_MODES),
        default=None,
        expose_value=False,
        is_eager=False,
        callback=_set_output,
        help="table (key=value lines) or json (one JSON value; pretty on a terminal).",
    )(func)


def task_id_argument(func: F) -> F:
    return click.argument("task_id", metavar="ID")(func)
