"""The proxy's own upstream client: response heads, keep-alive, failures."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest

from cynode.proxy import parse_upstream
from cynode.proxy._upstream import Framing, UpstreamError, UpstreamPool, parse_head
from tests.proxy.conftest import ProxyFactory, RawUpstream, raw_exchange

GET_TAGS = b"GET /api/tags HTTP/1.1\r\nHost: x\r\n\r\n"


def head(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize(
    ("raw", "method", "framing", "length", "keep_alive"),
    [
        (head("HTTP/1.1 200 OK", "Content-Length: 12"), "GET", Framing.LENGTH, 12, True),
        (head("HTTP/1.1 200 OK", "Content-Length: 3, 3"), "GET", Framing.LENGTH, 3, True),
        (head("HTTP/1.1 200 OK", "Transfer-Encoding: chunked"), "GET", Framing.CHUNKED, 0, True),
        (
            head("HTTP/1.1 200 OK", "Transfer-Encoding: chunked", "Content-Length: 5"),
            "GET",
            Framing.CHUNKED,
            0,
            False,
        ),
        (head("HTTP/1.1 200 OK", "Transfer-Encoding: gzip"), "GET", Framing.CLOSE, 0, False),
        (head("HTTP/1.1 200 OK"), "GET", Framing.CLOSE, 0, False),
        (head("HTTP/1.1 200 OK", "Content-Length: 9"), "HEAD", Framing.NONE, 0, True),
        (head("HTTP/1.1 304 Not Modified"), "GET", Framing.NONE, 0, True),
        (head("HTTP/1.1 204 No Content", "Connection: close"), "GET", Framing.NONE, 0, False),
        (
            head("HTTP/1.0 200 OK", "Connection: keep-alive", "Content-Length: 1"),
            "GET",
            Framing.LENGTH,
            1,
            True,
        ),
        (head("HTTP/1.0 200 OK", "Content-Length: 1"), "GET", Framing.LENGTH, 1, False),
    ],
)
def test_parse_head_framing(
    raw: bytes, method: str, framing: Framing, length: int, keep_alive: bool
) -> None:
    parsed = parse_head(raw, method)
    assert parsed is not None
    assert (parsed.framing, parsed.length, parsed.keep_alive) == (framing, length, keep_alive)


def test_parse_head_keeps_names_and_values() -> None:
    parsed = parse_head(head("HTTP/1.1 404 Not Found", "X-Odd:  v a l \t", "Server: o"), "GET")
    assert parsed is not None
    assert (parsed.status, parsed.reason) == (404, "Not Found")
    assert parsed.headers == [("X-Odd", "v a l"), ("Server", "o")]


def test_parse_head_interim_is_none() -> None:
    assert parse_head(head("HTTP/1.1 100 Continue"), "POST") is None
    assert parse_head(head("HTTP/1.1 103 Early Hints", "Link: </a>"), "POST") is None


@pytest.mark.parametrize(
    "raw",
    [
        head("HTTP/2 200 OK"),
        head("HTTP/1.1 2000 OK"),
        head("ICY 200 OK"),
        head("HTTP/1.1 101 Switching Protocols", "Upgrade: x"),
        head("HTTP/1.1 200 OK", " folded: line"),
        head("HTTP/1.1 200 OK", "no colon"),
        head("HTTP/1.1 200 OK", "Bad Name: x"),
        head("HTTP/1.1 200 OK", "X: a\rb"),
        head("HTTP/1.1 200 OK", "Content-Length: 1", "Content-Length: 2"),
        head("HTTP/1.1 200 OK", "Content-Length: -1"),
        head("HTTP/1.1 200 OK", "Content-Length: 0x10"),
    ],
)
def test_parse_head_rejects(raw: bytes) -> None:
    with pytest.raises(UpstreamError):
        parse_head(raw, "GET")


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nX: \x00\r\n\r\n",
        b"NOT HTTP\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"a" * 70_000 + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-",  # then closes
    ],
)
async def test_unusable_answer_is_502(
    answer: bytes,
    raw_upstream: RawUpstream,
    make_proxy: ProxyFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def script(_: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> bool:
        writer.write(answer)
        await writer.drain()
        return False

    raw_upstream.script = script
    proxy = await make_proxy(raw_upstream.url)
    response = await raw_exchange(proxy.tcp_ports[0], GET_TAGS)
    assert response.status == 502
    assert b"upstream unavailable" in response.body
    assert any("upstream unavailable: UpstreamError" in r.getMessage() for r in caplog.records)


async def test_interim_responses_are_skipped(
    raw_upstream: RawUpstream, make_proxy: ProxyFactory
) -> None:
    async def script(_: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> bool:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        return True

    raw_upstream.script = script
    proxy = await make_proxy(raw_upstream.url)
    response = await raw_exchange(proxy.tcp_ports[0], GET_TAGS)
    assert (response.status, response.body) == (200, b"ok")


async def test_request_as_sent_upstream(
    raw_upstream: RawUpstream, make_proxy: ProxyFactory
) -> None:
    async def script(_: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        return True

    raw_upstream.script = script
    proxy = await make_proxy(raw_upstream.url)
    await raw_exchange(
        proxy.tcp_ports[0],
        b"POST /api/generate?x=%20y HTTP/1.1\r\nHost: sandbox\r\nContent-Length: 0\r\n"
        b"X-Cafe: \xc3\xa9t\xc3\xa9\r\nAuthorization: Bearer s\r\n\r\n",
    )
    sent = raw_upstream.heads[0]
    host = raw_upstream.url.removeprefix("http://").encode()
    assert sent.startswith(b"POST /api/generate?x=%20y HTTP/1.1\r\nHost: " + host + b"\r\n")
    assert b"\xc3\xa9t\xc3\xa9" in sent  # bytes passed on as they came
    assert b"Content-Length: 0\r\n" in sent
    assert b"Authorization" not in sent
    assert b"sandbox" not in sent


async def test_stale_kept_alive_connection_is_retried_for_bodyless_requests(
    raw_upstream: RawUpstream, make_proxy: ProxyFactory
) -> None:
    answered: list[int] = []

    async def script(_: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> bool:
        conn = raw_upstream.connections
        if answered.count(conn):
            return False  # the second request on a connection: hang up, as on idle expiry
        answered.append(conn)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        return True

    raw_upstream.script = script
    proxy = await make_proxy(raw_upstream.url)
    async with aiohttp.ClientSession() as client:
        for _ in range(2):
            async with client.get(f"http://{proxy.addresses[0]}/api/tags") as response:
                assert await response.read() == b"ok"
        # A body cannot be sent again: that request fails instead.
        async with client.post(f"http://{proxy.addresses[0]}/api/chat", data=b"{}") as response:
            assert response.status == 502
    assert answered == [1, 2]


async def test_connection_close_is_not_reused(
    raw_upstream: RawUpstream, make_proxy: ProxyFactory
) -> None:
    async def script(_: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.05)  # the proxy must not wait for or rely on this close
        return False

    raw_upstream.script = script
    proxy = await make_proxy(raw_upstream.url)
    for _ in range(2):
        response = await raw_exchange(proxy.tcp_ports[0], GET_TAGS)
        assert response.body == b"ok"
        assert response.header("Connection") is None
    assert raw_upstream.connections == 2


async def test_tls_upstream_that_speaks_plain_http_is_502(
    make_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(plain, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        proxy = await make_proxy(f"https://127.0.0.1:{port}")
        response = await raw_exchange(proxy.tcp_ports[0], GET_TAGS)
    finally:
        server.close()
    assert response.status == 502
    assert any("upstream unavailable" in r.getMessage() for r in caplog.records)


async def test_pool_keeps_a_bounded_number_of_idle_connections(
    raw_upstream: RawUpstream,
) -> None:
    pool = UpstreamPool(parse_upstream(raw_upstream.url))
    conns = [await pool.connect() for _ in range(20)]
    for conn in conns:
        pool.release(conn)
    reused = [await pool.acquire() for _ in range(20)]
    assert sum(1 for _, was_idle in reused if was_idle) == 16
    pool.close()
    for conn, _ in reused:
        conn.close()
    pool.release(reused[0][0])  # after close: closed, not kept
    assert not reused[0][0].alive


async def test_request_body_waits_for_a_slow_upstream(make_proxy: ProxyFactory) -> None:
    """The proxy's write buffer towards the upstream stays bounded (it drains)."""
    body = b"b" * (4 * 1024 * 1024)
    got: list[int] = []

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        seen = 0
        while seen < len(body):
            seen += len(await reader.read(65536))
            await asyncio.sleep(0.001)
        got.append(seen)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.bind(("127.0.0.1", 0))
    server = await asyncio.start_server(slow, sock=sock)
    try:
        proxy = await make_proxy(
            f"http://127.0.0.1:{sock.getsockname()[1]}", max_body_bytes=len(body)
        )
        async with (
            aiohttp.ClientSession() as client,
            client.post(f"http://{proxy.addresses[0]}/api/chat", data=body) as response,
        ):
            assert await response.read() == b"ok"
    finally:
        server.close()
    assert got == [len(body)]
