"""A client on this host gets streamed answers without congestion control's pacing and
with a short queue of unsent bytes in its socket; one on a Unix socket, with a send
buffer a pipe-full deep."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cynode.proxy import _handler
from tests.proxy.conftest import ProxyFactory, RawUpstream, raw_exchange

GENERATE = b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"


def congestion(sock: socket.socket) -> bytes:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\0")


def unsent_limit(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT)


def pacing_algorithm(sock: socket.socket) -> bytes:
    """Put ``sock`` on some algorithm other than reno (the tests run as root)."""
    names = Path("/proc/sys/net/ipv4/tcp_available_congestion_control").read_text().split()
    for name in names:
        if name != "reno":
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, name.encode())
            return name.encode()
    pytest.fail(f"no congestion control besides reno here: {names}")


class Transport:
    """What ``_tune_client`` asks of an asyncio transport."""

    def __init__(self, sock: socket.socket, peername: Any) -> None:
        self.extra = {"socket": sock, "peername": peername}

    def get_extra_info(self, name: str) -> Any:
        return self.extra.get(name)


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    yield server, client
    server.close()
    client.close()


def test_a_loopback_peer_gets_reno_and_a_short_unsent_queue(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    server, _ = tcp_pair
    pacing_algorithm(server)
    assert unsent_limit(server) != _handler.NOTSENT_LOWAT  # 0: the host default
    _handler._tune_client(Transport(server, server.getpeername()))  # type: ignore[arg-type]
    assert congestion(server) == b"reno"
    assert unsent_limit(server) == _handler.NOTSENT_LOWAT


def test_a_v4_client_of_a_dual_stack_listener_counts_as_loopback(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    server, _ = tcp_pair
    pacing_algorithm(server)
    mapped = ("::ffff:127.0.0.1", 40000, 0, 0)
    _handler._tune_client(Transport(server, mapped))  # type: ignore[arg-type]
    assert congestion(server) == b"reno"


def test_other_peers_and_unix_sockets_keep_what_they_have(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    server, _ = tcp_pair
    chosen = pacing_algorithm(server)
    limit = unsent_limit(server)
    # As if the peer were another host (a documentation address).
    _handler._tune_client(Transport(server, ("192.0.2.7", 40000)))  # type: ignore[arg-type]
    assert congestion(server) == chosen
    assert unsent_limit(server) == limit


def test_a_unix_client_gets_a_deep_send_buffer() -> None:
    left, right = socket.socketpair()
    with left, right:
        before = left.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        assert before < 2 * _handler.UNIX_SNDBUF
        _handler._tune_client(Transport(left, ""))  # type: ignore[arg-type]
        grown = left.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        # As deep as asked, or as net.core.wmem_max lets it be.
        wmem_max = int(Path("/proc/sys/net/core/wmem_max").read_text())
        assert grown == 2 * min(_handler.UNIX_SNDBUF, wmem_max) > before
        # Never made smaller than it is.
        left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * _handler.UNIX_SNDBUF)
        deeper = left.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        _handler._tune_client(Transport(left, ""))  # type: ignore[arg-type]
        assert left.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == deeper


async def test_streamed_answers_are_tuned_and_answers_in_hand_are_not(
    raw_upstream: RawUpstream, make_proxy: ProxyFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(_handler, "_tune_client", calls.append)

    async def script(_: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> bool:
        if head.startswith(b"GET"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        else:
            writer.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            )
        await writer.drain()
        return True

    raw_upstream.script = script
    proxy = await make_proxy(raw_upstream.url)
    port = proxy.tcp_ports[0]
    short = await raw_exchange(port, b"GET /api/tags HTTP/1.1\r\nHost: x\r\n\r\n")
    assert short.body == b"ok"
    assert calls == []
    streamed = await raw_exchange(port, GENERATE)
    assert streamed.body == b"hello"
    assert len(calls) == 1
    assert calls[0].get_extra_info("peername")[0] == "127.0.0.1"
