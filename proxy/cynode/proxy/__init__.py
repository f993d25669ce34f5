"""The streaming inference proxy: sidecar in a job's pod, and the node's relay.

It forwards an allowlisted set of Ollama/OpenAI inference paths to one upstream (TCP or
Unix socket), relays responses chunk by chunk, and guards the way out: a request body
cap (413), an upstream timeout (504), no model management (403), and no credential or
hop-by-hop header in either direction. Only stdlib and aiohttp (>= 3.8) are used, so the
sidecar image can run it on Debian's python3-aiohttp.

    proxy = await start_proxy(ProxyConfig(upstream=parse_upstream("http://127.0.0.1:11434"),
                                          listen=(parse_listen("unix:/run/relay.sock"),)))
    ...
    await proxy.close()
"""

from __future__ import annotations

from cynode.proxy._config import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_TIMEOUT_SECONDS,
    ConfigError,
    ListenAddress,
    ProxyConfig,
    Upstream,
    parse_listen,
    parse_upstream,
)
from cynode.proxy._policy import ALLOWED_PATHS, FORBIDDEN_PATHS

# Not `typing.TYPE_CHECKING`: importing typing costs the sidecar's start ~14 ms, and mypy
# treats any name TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from cynode.proxy._listen import bind_listener, close_listeners
    from cynode.proxy._local import Answer
    from cynode.proxy._server import RunningProxy, start_proxy
    from cynode.proxy._upstream import UpstreamError


def __getattr__(name: str) -> Any:
    # aiohttp comes in with the server, on first use: `python3 -m cynode.proxy` imports
    # this package first and binds its listeners before aiohttp is loaded (cli.py).
    if name in ("RunningProxy", "start_proxy"):
        from cynode.proxy import _server

        return getattr(_server, name)
    if name in ("bind_listener", "close_listeners"):
        from cynode.proxy import _listen

        return getattr(_listen, name)
    if name == "Answer":
        from cynode.proxy import _local

        return _local.Answer
    if name == "UpstreamError":
        from cynode.proxy import _upstream

        return _upstream.UpstreamError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ALLOWED_PATHS",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_TIMEOUT_SECONDS",
    "FORBIDDEN_PATHS",
    "Answer",
    "ConfigError",
    "ListenAddress",
    "ProxyConfig",
    "RunningProxy",
    "Upstream",
    "UpstreamError",
    "bind_listener",
    "close_listeners",
    "parse_listen",
    "parse_upstream",
    "start_proxy",
]
