"""Start and stop a proxy: listeners, the shared upstream connection pool, cleanup."""

from __future__ import annotations

import contextlib
import inspect
import logging
import socket
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from cynode.proxy import _local
from cynode.proxy._config import ListenAddress, ProxyConfig
from cynode.proxy._handler import ProxyHandler
from cynode.proxy._listen import bind_listeners, close_listeners
from cynode.proxy._upstream import UpstreamPool

log = logging.getLogger("cynode.proxy")

# aiohttp 3.9 moved the shutdown grace period from the sites to the runner and warns
# about the old place; 3.8 (Debian bookworm) only knows the old place.
_RUNNER_TAKES_SHUTDOWN_TIMEOUT = (
    "shutdown_timeout" in inspect.signature(web.BaseRunner.__init__).parameters
)


@dataclass
class RunningProxy:
    """A started proxy. ``addresses`` are the bound listeners as strings
    (``127.0.0.1:41234``, ``[::1]:11434``, ``unix:/path``); ``close()`` stops it."""

    config: ProxyConfig
    addresses: list[str]
    _runner: web.BaseRunner
    _pool: UpstreamPool
    _unix_paths: list[str] = field(default_factory=list)
    _closed: bool = False

    @property
    def tcp_ports(self) -> list[int]:
        """Bound TCP ports in listener order (useful when a listener asked for port 0)."""
        return [int(a.rsplit(":", 1)[1]) for a in self.addresses if not a.startswith("unix:")]

    @property
    def unix_paths(self) -> list[str]:
        return list(self._unix_paths)

    def call(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Iterable[tuple[str, str]] = (),
        *,
        head_timeout: float | None = None,
    ) -> AbstractAsyncContextManager[_local.Answer]:
        """A request through this proxy's policy and upstream pool from this process,
        without a socket hop (`_local`; the node's inference link calls its relay so)."""
        if self._closed:
            raise RuntimeError("the proxy is closed")
        return _local.call(
            self.config, self._pool, method, path, body, headers, head_timeout=head_timeout
        )

    async def close(self) -> None:
        """Stop listening, give in-flight requests ``shutdown_timeout`` s, then cut them."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._runner.cleanup()
        finally:
            self._pool.close()
            _remove_sockets(self._unix_paths)

    async def __aenter__(self) -> RunningProxy:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _remove_sockets(paths: list[str]) -> None:
    # Python 3.11's asyncio leaves the socket file behind when the server closes.
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            Path(path).unlink()


def _site(runner: web.BaseRunner, sock: socket.socket, config: ProxyConfig) -> web.BaseSite:
    extra: dict[str, Any] = {}
    if not _RUNNER_TAKES_SHUTDOWN_TIMEOUT:
        extra["shutdown_timeout"] = config.shutdown_timeout
    return web.SockSite(runner, sock, **extra)


def _bound(names: list[Any], listen: ListenAddress) -> str:
    """Render what the new site bound: the first socket name of that listener."""
    if listen.unix_path is not None:
        return f"unix:{listen.unix_path}"
    host, port = names[0][:2]
    return str(ListenAddress(host=host, port=port))


async def start_proxy(
    config: ProxyConfig, sockets: list[list[socket.socket]] | None = None
) -> RunningProxy:
    """Serve every listener and start forwarding to ``config.upstream``. ``sockets`` are
    the listeners already bound by `_listen.bind_listeners` (the command line binds them
    before importing this module); without them they are bound here."""
    if sockets is None:
        sockets = bind_listeners(config)
    pool = UpstreamPool(config.upstream)
    server = web.Server(ProxyHandler(config, pool), access_log=None)
    runner_kwargs: dict[str, Any] = {}
    if _RUNNER_TAKES_SHUTDOWN_TIMEOUT:
        runner_kwargs["shutdown_timeout"] = config.shutdown_timeout
    runner = web.ServerRunner(server, **runner_kwargs)
    addresses: list[str] = []
    unix_paths = [listen.unix_path for listen in config.listen if listen.unix_path is not None]
    served = 0
    try:
        await runner.setup()
        for listen, group in zip(config.listen, sockets, strict=True):
            before = len(runner.addresses)
            for sock in group:
                await _site(runner, sock, config).start()
            served += 1
            addresses.append(_bound(runner.addresses[before:], listen))
    except BaseException:
        await runner.cleanup()
        pool.close()
        close_listeners(sockets[served:])
        _remove_sockets(unix_paths)
        raise
    log.info("proxy listening on %s, upstream %s", ", ".join(addresses), config.upstream)
    return RunningProxy(config, addresses, runner, pool, unix_paths)
