"""Bind and listen on every configured address, with the standard library alone.

The sidecar binds its listeners before it imports aiohttp (200-350 ms on a loaded node):
from then on a client's connection is accepted by the kernel and waits in the backlog
until the server takes it, so the node may start the sandbox as soon as the proxy's Unix
socket accepts a connection (SPEC §4.6). TCP listeners are bound first and the Unix
sockets last, so a Unix socket that accepts means every listener does.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

from cynode.proxy._config import ListenAddress, ProxyConfig

BACKLOG = 128  # aiohttp's default


def _tcp(listen: ListenAddress) -> list[socket.socket]:
    # Every address the host resolves to, as asyncio's create_server does.
    infos = socket.getaddrinfo(
        listen.host, listen.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    bound: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            # proto IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted connections only
            # then; the listener's own TCP_NODELAY is inherited by them on Linux anyway.
            sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
            bound.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
    except BaseException:
        for sock in bound:
            sock.close()
        raise
    return bound


def _unix(path: str, mode: int) -> socket.socket:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # A socket file left by an earlier run is replaced, as asyncio does; nothing else is.
    with contextlib.suppress(FileNotFoundError):
        if Path(path).is_socket():
            Path(path).unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
    except BaseException:
        sock.close()
        raise
    try:
        # The sandbox user differs from the proxy's; the socket file is the door.
        Path(path).chmod(mode)
        sock.listen(BACKLOG)
    except BaseException:
        close_listeners([[sock]])
        raise
    return sock


def bind_listener(listen: ListenAddress, unix_socket_mode: int = 0o666) -> list[socket.socket]:
    """The listening sockets of one address (a TCP host may resolve to several); OSError
    when it cannot be bound. The node binds a cold job's listeners one by one with it,
    the TCP one inside the sandbox's network namespace (cynode.node.runtime.job_proxy),
    and hands them to `start_proxy`."""
    if listen.unix_path is None:
        return _tcp(listen)
    return [_unix(listen.unix_path, unix_socket_mode)]


def bind_listeners(config: ProxyConfig) -> list[list[socket.socket]]:
    """The listening sockets of each `config.listen` entry, in its order (a TCP host
    may resolve to several). OSError when one cannot be bound; none is left open then."""
    sockets: dict[int, list[socket.socket]] = {}
    order = sorted(range(len(config.listen)), key=lambda i: config.listen[i].unix_path is not None)
    try:
        for index in order:
            sockets[index] = bind_listener(config.listen[index], config.unix_socket_mode)
    except BaseException:
        close_listeners(list(sockets.values()))
        raise
    return [sockets[index] for index in range(len(config.listen))]


def close_listeners(sockets: list[list[socket.socket]]) -> None:
    """Close sockets that no server took over, and remove their Unix socket files."""
    for group in sockets:
        for sock in group:
            if sock.fileno() == -1:  # closed already, by the server that took it
                continue
            path = sock.getsockname() if sock.family == socket.AF_UNIX else ""
            sock.close()
            if isinstance(path, str) and path:
                with contextlib.suppress(FileNotFoundError):
                    Path(path).unlink()
