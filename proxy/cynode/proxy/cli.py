"""``cynode-proxy`` / ``python -m cynode.proxy``: run the proxy until SIGTERM or SIGINT.

``python -m cynode.proxy host --control unix:/path`` runs the node's proxy host instead
(one child per cold inference job, `_host.py`).

Flags win over environment; each flag's env variable is declared with its ProxyConfig
field (`_config.ENV`): CYNODE_PROXY_LISTEN (comma-separated listeners),
CYNODE_PROXY_UPSTREAM, CYNODE_PROXY_MAX_BODY_BYTES, CYNODE_PROXY_TIMEOUT,
CYNODE_PROXY_IDLE_TIMEOUT. Reference: docs/settings.md.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Mapping, Sequence

from cynode.proxy._config import (
    DEFAULT_LISTEN,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_TIMEOUT_SECONDS,
    ENV,
    ConfigError,
    ProxyConfig,
    parse_listen,
    parse_upstream,
)
from cynode.proxy._listen import bind_listeners, close_listeners

# asyncio (~30 ms) and aiohttp (200-350 ms) are imported once the listeners are bound,
# so the sidecar accepts connections as early as it can (cynode.proxy._listen).
TYPE_CHECKING = False  # not typing's: importing typing costs the start ~14 ms
if TYPE_CHECKING:
    import asyncio


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cynode-proxy",
        description="Guarded streaming proxy in front of an Ollama-compatible server.",
    )
    parser.add_argument(
        "--listen",
        action="append",
        metavar="ADDR",
        help="host:port, [v6]:port or unix:/path; repeatable "
        f"(env CYNODE_PROXY_LISTEN, comma-separated; default {DEFAULT_LISTEN})",
    )
    parser.add_argument(
        "--upstream",
        metavar="URL",
        help="http://host:port, unix:/path or http+unix://<encoded path> "
        "(env CYNODE_PROXY_UPSTREAM; required)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        metavar="N",
        help=f"request body cap, 413 beyond it (default {DEFAULT_MAX_BODY_BYTES})",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="wait for the upstream's response head, 504 beyond it "
        f"(default {DEFAULT_TIMEOUT_SECONDS:g})",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        metavar="SECONDS",
        help="longest silence between streamed chunks before the stream is cut "
        "(default: --timeout)",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return parser


def _number(kind: type[int] | type[float], name: str, env: Mapping[str, str]) -> float | None:
    text = env.get(ENV[name], "")
    if not text:
        return None
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(f"{ENV[name]} must be a number, got {text!r}") from None


def config_from_args(args: argparse.Namespace, env: Mapping[str, str]) -> ProxyConfig:
    listen_texts: list[str] = args.listen or [
        part for part in env.get(ENV["listen"], DEFAULT_LISTEN).split(",") if part.strip()
    ]
    upstream_text = args.upstream or env.get(ENV["upstream"])
    if not upstream_text:
        raise ConfigError(f"an upstream is required (--upstream or {ENV['upstream']})")
    max_body = args.max_body_bytes
    if max_body is None:
        max_body = _number(int, "max_body_bytes", env)
    timeout = args.timeout
    if timeout is None:
        timeout = _number(float, "timeout", env)
    idle = args.idle_timeout
    if idle is None:
        idle = _number(float, "idle_timeout", env)
    return ProxyConfig(
        upstream=parse_upstream(upstream_text),
        listen=tuple(parse_listen(text) for text in listen_texts),
        max_body_bytes=DEFAULT_MAX_BODY_BYTES if max_body is None else int(max_body),
        timeout=DEFAULT_TIMEOUT_SECONDS if timeout is None else timeout,
        idle_timeout=idle,
    )


async def serve(
    config: ProxyConfig,
    stop: asyncio.Event | None = None,
    sockets: list[list[socket.socket]] | None = None,
) -> None:
    """Run until ``stop`` is set or SIGTERM/SIGINT arrives (PID 1 in a container gets
    no default signal handlers, so without this podman waits its full stop timeout).
    ``sockets``: the listeners, bound already (`main`)."""
    import asyncio

    from cynode.proxy._server import start_proxy

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
            installed.append(signum)
    if _early_stop:
        stop.set()
    proxy = await start_proxy(config, sockets)
    try:
        await stop.wait()
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
        await proxy.close()


# Set by a SIGTERM that came before serve() installed its handlers.
_early_stop: list[int] = []


def _note_stop(signum: int, frame: object) -> None:
    # Noted, not raised: an exception here could land between a bind and the code that
    # removes the socket file again; serve() stops at once instead.
    _early_stop.append(signum)


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    if given[:1] == ["host"]:
        # The node's proxy host: one process, a forked child per cold job (_host.py).
        from cynode.proxy import _host

        return _host.main(given[1:])
    parser = build_parser()
    args = parser.parse_args(given)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        config = config_from_args(args, os.environ)
    except (ConfigError, ValueError) as exc:
        parser.error(str(exc))
    # A stop asked for before serve() installs its handlers (the listeners exist from
    # here on, so the node may already be stopping the pod) still exits cleanly.
    previous = None
    _early_stop.clear()
    with contextlib.suppress(ValueError):  # not the main thread: the caller's business
        previous = signal.signal(signal.SIGTERM, _note_stop)
    try:
        return _serve_bound(config)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _serve_bound(config: ProxyConfig) -> int:
    try:
        # Bound before anything heavy is imported: clients may connect from here on.
        sockets = bind_listeners(config)
    except OSError as exc:
        logging.getLogger("cynode.proxy").error("cannot start: %s", exc)
        return 1
    try:
        import asyncio

        asyncio.run(serve(config, sockets=sockets))
    except OSError as exc:
        logging.getLogger("cynode.proxy").error("cannot start: %s", exc)
        return 1
    finally:
        close_listeners(sockets)  # those the server never took over
    return 0
