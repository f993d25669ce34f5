"""Response bodies through both relays: zero-copy (splice) and copying.

Every test here runs once per relay (splice reading chunk headers ahead, splice one
chunk at a time as on kernels without TCP ``SO_PEEK_OFF``, and copying) against a
byte-level upstream that frames its answer exactly as the test says (chunk sizes, split
headers, extensions, trailers, broken framing, cuts).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest

from cynode.proxy import _handler, _splice
from tests.proxy.conftest import (
    ProxyFactory,
    RawUpstream,
    Script,
    ScriptedUpstream,
    eventually,
    raw_exchange,
    read_response,
)

PAYLOAD = random.Random(7).randbytes(3 * 1024 * 1024 + 123)
GENERATE = b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
CHUNKED_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
)


@pytest.fixture(params=["splice", "splice-chunkwise", "copy"])
def relay(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    mode: str = request.param
    if mode == "copy":
        monkeypatch.setattr(_splice, "_available", False)
    else:
        assert _splice.available(), "splice must work on the test machine"
        # A fresh verdict per family, or none at all: no peeking ahead.
        monkeypatch.setattr(_splice, "_peek_offset", {} if mode == "splice" else None)
    return mode


def pieces(data: bytes, sizes: list[int]) -> list[bytes]:
    """``data`` cut into pieces cycling through ``sizes``."""
    out, at, i = [], 0, 0
    while at < len(data):
        size = sizes[i % len(sizes)]
        out.append(data[at : at + size])
        at += size
        i += 1
    return out


async def send_chunked(
    writer: asyncio.StreamWriter, parts: list[bytes], *, split: bool = False, ext: bool = False
) -> None:
    for n, part in enumerate(parts):
        size = b"%x" % len(part)
        if ext and n % 3 == 1:
            size += b" ;name=value"
        elif n % 4 == 2:
            size = size.upper().rjust(6, b"0")  # padded and upper case: still plain hex
        frame = size + b"\r\n" + part + b"\r\n"
        if split and n % 2:
            # Header, data and CRLF in separate segments, a pause between them.
            for cut in (frame[:2], frame[2 : len(size) + 2], frame[len(size) + 2 : -1], b"\n"):
                writer.write(cut)
                await writer.drain()
                await asyncio.sleep(0.002)
        else:
            writer.write(frame)
            await writer.drain()


def chunked_answer(body: bytes, sizes: list[int]) -> Script:
    """An upstream script answering with `body` chunked at `sizes`, keeping the connection."""

    async def script(_: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> bool:
        writer.write(CHUNKED_HEAD)
        await send_chunked(writer, pieces(body, sizes))
        writer.write(b"0\r\n\r\n")
        return True

    return script


async def fetch(url: str, **kwargs: object) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as client,
        client.post(url, json={}, **kwargs) as response,  # type: ignore[arg-type]
    ):
        return response.status, await response.read()


@pytest.mark.parametrize("side", ["tcp", "unix"])
async def test_large_chunked_stream_is_byte_exact(
    relay: str,
    side: str,
    raw_upstream: RawUpstream,
    make_proxy: ProxyFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="cynode.proxy")

    async def script(_: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> bool:
        writer.write(CHUNKED_HEAD)
        await send_chunked(writer, pieces(PAYLOAD, [1, 200, 65536, 300_000, 7, 131_072]))
        writer.write(b"0\r\nX-Trailer: dropped\r\n\r\n")
        return True

    raw_upstream.script = script
    upstream = raw_upstream.url if side == "tcp" else f"unix:{raw_upstream.unix_path}"
    proxy = await make_proxy(upstream)
    status, body = await fetch(f"http://{proxy.addresses[0]}/api/generate")
    assert status == 200
    assert hashlib.sha256(body).digest() == hashlib.sha256(PAYLOAD).digest()
    logged = [r.getMessage() for r in caplog.records if r.name == "cynode.proxy.access"]
    assert logged[-1].startswith(f"POST /api/generate 200 {len(PAYLOAD)} ")


async def test_awkward_chunk_headers_are_rewritten(
    relay: str, raw_upstream: RawUpstream, make_proxy: ProxyFactory
) -> None:
    """Split headers, extensions and padding reach the client as plain chunks."""

    async def script(_: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> bool:
        writer.write(CHUNKED_HEAD + b"5\r\nfirst\r\n")  # body begins in the head's read
        await send_chunked(writer, pieces(PAYLOAD[:400_000], [3, 70_000, 1]), split=True, ext=True)
        writer.write(b"0\r\n")
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(b"X-A: 1\r\n")
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(b"\r\n")
        return True

    raw_upstream.script = script
    proxy = await make_proxy(raw_upstream.url)
    response = await raw_exchange(proxy.tcp_ports[0], GENERATE)
    assert response.complete
    assert response.body == b"first" + PAYLOAD[:400_000]
    assert response.header("Transfer-Encoding") == "chunked"


async def test_large_length_body_is_byte_exact(
    relay: str, raw_upstream: RawUpstream, make_proxy: ProxyFactory
) -> None:
    async def script(_: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(PAYLOAD))
        for part in pieces(PAYLOAD, [10, 100_000, 1_000_000]):
            writer.write(part)
            await writer.drain()
        return True

    raw_upstream.script = script
    proxy = await make_proxy(raw_upstream.url)
    status, body = await fetch(f"http://{proxy.addresses[0]}/api/generate")
    assert status == 200
    assert body == PAYLOAD


async def test_body_until_close_is_relayed_chunked(
    relay: str, raw_upstream: RawUpstream, make_proxy: ProxyFactory
) -> None:
    async def script(_: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> bool:
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        for part in pieces(PAYLOAD[:500_000], [65536]):
            writer.write(part)
            await writer.drain()
        return False  # the close ends the body

    raw_upstream.script = script
    proxy = await make_proxy(raw_upstream.url)
    response = await raw_exchange(proxy.tcp_ports[0], GENERATE)
    assert response.complete
    assert response.header("Transfer-Encoding") == "chunked"
    assert response.body == PAYLOAD[:500_000]


async def test_http10_client_gets_the_chunked_body_decoded(
    relay: str, raw_upstream: RawUpstream, make_proxy: ProxyFactory
) -> None:
    raw_upstream.script = chunked_answer(PAYLOAD[:300_000], [1000, 65536])
    proxy = await make_proxy(raw_upstream.url)
    response = await raw_exchange(
        proxy.tcp_ports[0],
        b"POST /api/generate HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}",
    )
    assert response.header("Transfer-Encoding") is None
    assert response.body == PAYLOAD[:300_000]


async def test_sequential_streams_keep_both_connections(
    relay: str, raw_upstream: RawUpstream, make_proxy: ProxyFactory
) -> None:
    raw_upstream.script = chunked_answer(PAYLOAD[:200_000], [65536])
    proxy = await make_proxy(raw_upstream.url)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.tcp_ports[0])
    try:
        for _ in range(3):
            writer.write(GENERATE)
            await writer.drain()
            response = await asyncio.wait_for(read_response(reader), 10)
            assert response.complete
            assert response.body == PAYLOAD[:200_000]
    finally:
        writer.close()
    assert raw_upstream.connections == 1
    assert len(raw_upstream.heads) == 3


async def test_head_and_no_content_have_no_body(
    relay: str, raw_upstream: RawUpstream, make_proxy: ProxyFactory
) -> None:
    async def script(_: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> bool:
        if head.startswith(b"HEAD"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        return True

    raw_upstream.script = script
    proxy = await make_proxy(raw_upstream.url)
    async with aiohttp.ClientSession() as client:
        async with client.head(f"http://{proxy.addresses[0]}/") as response:
            assert response.status == 200
            assert response.headers["Content-Length"] == "17"
        async with client.get(f"http://{proxy.addresses[0]}/api/tags") as response:
            assert response.status == 204
            assert await response.read() == b""
    assert raw_upstream.connections == 1


@pytest.mark.parametrize("answer", ["head-chunked", "head-bare", "not-modified"])
async def test_bodiless_answers_without_length_leave_the_connection_clean(
    answer: str, relay: str, raw_upstream: RawUpstream, make_proxy: ProxyFactory
) -> None:
    """A HEAD answer or a 304 without Content-Length has no body, and none is made up
    for it: aiohttp 3.8 would otherwise frame it chunked and end it with a stray last
    chunk, which the client then reads as the start of its next response."""
    heads = {
        "head-chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        "head-bare": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n",
        "not-modified": b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\n\r\n',
    }

    async def script(_: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> bool:
        if head.startswith(b"GET /api/version"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        else:
            writer.write(heads[answer])
        return True

    raw_upstream.script = script
    proxy = await make_proxy(raw_upstream.url)
    first = b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"
    if answer == "not-modified":
        first = b'GET /api/tags HTTP/1.1\r\nHost: x\r\nIf-None-Match: "v1"\r\n\r\n'
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.tcp_ports[0])
    try:
        writer.write(first)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 304" if answer == "not-modified" else b"HTTP/1.1 200")
        assert b"content-length" not in head.lower()
        # The same connection answers the next request, from its first byte on.
        writer.write(b"GET /api/version HTTP/1.1\r\nHost: x\r\n\r\n")
        second = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert second.startswith(b"HTTP/1.1 200 OK\r\n"), second
        assert await asyncio.wait_for(reader.readexactly(2), 10) == b"ok"
    finally:
        writer.close()
    assert raw_upstream.connections == 1


CUTS: dict[str, tuple[bytes, bytes]] = {
    # name: (what the upstream sends after the head, the payload the client gets)
    "mid-chunk": (b"a\r\n0123", b"0123"),
    "no-crlf-after-data": (b"4\r\nabcdXY4\r\nefgh\r\n0\r\n\r\n", b"abcd"),
    "bad-size": (b"4\r\nabcd\r\nzz\r\nxx\r\n0\r\n\r\n", b"abcd"),
    "long-header": (b"4\r\nabcd\r\n" + b"1" * 20_000 + b"\r\n", b"abcd"),
    "mid-trailers": (b"4\r\nabcd\r\n0\r\nX-A: 1\r\n", b"abcd"),
}


@pytest.mark.parametrize("cut", sorted(CUTS))
async def test_broken_or_cut_chunked_body_cuts_the_client(
    cut: str,
    relay: str,
    raw_upstream: RawUpstream,
    make_proxy: ProxyFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sent, seen = CUTS[cut]

    async def script(_: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> bool:
        writer.write(CHUNKED_HEAD + sent)
        await writer.drain()
        return False

    raw_upstream.script = script
    proxy = await make_proxy(raw_upstream.url)
    response = await raw_exchange(proxy.tcp_ports[0], GENERATE)
    assert response.status == 200
    assert not response.complete
    # What arrived before the break is passed on; the end never is.
    assert response.body == seen
    assert any("stream aborted" in r.getMessage() for r in caplog.records)


async def test_cut_length_body_cuts_the_client(
    relay: str, raw_upstream: RawUpstream, make_proxy: ProxyFactory
) -> None:
    async def script(_: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"z" * 5000)
        await writer.drain()
        return False

    raw_upstream.script = script
    proxy = await make_proxy(raw_upstream.url)
    response = await raw_exchange(proxy.tcp_ports[0], GENERATE)
    assert not response.complete
    assert response.body == b"z" * 5000


async def flood(writer: asyncio.StreamWriter, stop: asyncio.Event) -> None:
    """Chunks until the connection is cut (or 256 MiB, or ``stop``)."""
    block = b"%x\r\n%b\r\n" % (65536, PAYLOAD[:65536])
    for _ in range(4096):
        if stop.is_set():
            return
        writer.write(block)
        await writer.drain()


def flooding_answer(stop: asyncio.Event) -> Script:
    """An upstream script streaming chunks until `stop` is set, then closing."""

    async def script(_: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> bool:
        writer.write(CHUNKED_HEAD)
        await flood(writer, stop)
        return False

    return script


async def test_idle_timeout_cuts_a_client_that_stops_reading(
    relay: str,
    raw_upstream: RawUpstream,
    make_proxy: ProxyFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = asyncio.Event()

    raw_upstream.script = flooding_answer(stop)
    proxy = await make_proxy(raw_upstream.url, timeout=5, idle_timeout=0.3)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", proxy.tcp_ports[0]))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
    try:
        writer.write(GENERATE)
        await writer.drain()
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)

        def aborted() -> bool:
            return any("stream aborted" in r.getMessage() for r in caplog.records)

        await eventually(aborted, 5)  # not reading; the proxy must give up on its own
        # What was queued still arrives, then the cut: no last chunk.
        rest = await asyncio.wait_for(_drain(reader), 10)
        assert not rest.endswith(b"0\r\n\r\n")
    finally:
        stop.set()
        writer.close()


async def _drain(reader: asyncio.StreamReader) -> bytes:
    data = b""
    while chunk := await reader.read(1 << 20):
        data = data[-16:] + chunk
    return data


async def test_client_leaving_a_large_stream(
    relay: str,
    raw_upstream: RawUpstream,
    make_proxy: ProxyFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="cynode.proxy")
    stop = asyncio.Event()

    raw_upstream.script = flooding_answer(stop)
    proxy = await make_proxy(raw_upstream.url)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.tcp_ports[0])
    writer.write(GENERATE)
    await writer.drain()
    await asyncio.wait_for(reader.readexactly(1 << 20), 10)
    writer.transport.abort()  # RST: the proxy's next write fails at once

    def logged() -> bool:
        return any(
            r.getMessage().startswith("POST /api/generate 200 ")
            for r in caplog.records
            if r.name == "cynode.proxy.access"
        )

    try:
        await eventually(logged, 10)
        assert any("client went away" in r.getMessage() for r in caplog.records)
        # The upstream connection was closed, not pooled: its writes fail.
        await eventually(lambda: raw_upstream.errors, 5)
    finally:
        stop.set()


async def test_sse_over_unix_listener_and_upstream(
    relay: str, raw_upstream: RawUpstream, make_proxy: ProxyFactory
) -> None:
    """Small events pass one by one through a UDS listener and a UDS upstream."""
    release = asyncio.Event()

    async def script(_: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> bool:
        writer.write(CHUNKED_HEAD.replace(b"application/x-ndjson", b"text/event-stream"))
        await send_chunked(writer, [b'data: {"n":1}\n\n'])
        await release.wait()
        await send_chunked(writer, [b"data: [DONE]\n\n"])
        writer.write(b"0\r\n\r\n")
        return True

    raw_upstream.script = script
    sock = f"{raw_upstream.unix_path}.proxy"
    await make_proxy(f"unix:{raw_upstream.unix_path}", f"unix:{sock}")
    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=sock)) as client,
        client.post("http://localhost/v1/chat/completions", json={}) as response,
    ):
        first = await asyncio.wait_for(response.content.readline(), 10)
        assert first == b'data: {"n":1}\n'
        assert await asyncio.wait_for(response.content.readline(), 10) == b"\n"
        release.set()
        assert await asyncio.wait_for(response.content.read(), 10) == b"data: [DONE]\n\n"


async def test_client_leaving_mid_request_body_cuts_upstream(
    raw_upstream: RawUpstream, make_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cynode.proxy")

    async def script(_: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> bool:
        raise AssertionError("the body never arrives whole")

    raw_upstream.script = script
    proxy = await make_proxy(raw_upstream.url)
    _, writer = await asyncio.open_connection("127.0.0.1", proxy.tcp_ports[0])
    writer.write(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{")
    await writer.drain()
    await eventually(lambda: raw_upstream.heads, 5)
    writer.transport.abort()

    def settled() -> bool:
        return bool(raw_upstream.errors) and any(
            "request body not forwarded" in r.getMessage() for r in caplog.records
        )

    await eventually(settled, 5)
    assert raw_upstream.errors == ["IncompleteReadError"]


async def test_proxy_shutdown_mid_stream_cuts_both_sides(
    relay: str, raw_upstream: RawUpstream, make_proxy: ProxyFactory
) -> None:
    release = asyncio.Event()

    async def script(_: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> bool:
        writer.write(CHUNKED_HEAD + b"3\r\none\r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"3\r\ntwo\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    raw_upstream.script = script
    proxy = await make_proxy(raw_upstream.url)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.tcp_ports[0])
    try:
        writer.write(GENERATE)
        await writer.drain()
        await asyncio.wait_for(reader.readuntil(b"one\r\n"), 10)
        await proxy.close()  # the handler is cancelled after the grace period
        response = await asyncio.wait_for(reader.read(), 10)
        assert b"0\r\n\r\n" not in response
        release.set()
        await eventually(lambda: raw_upstream.errors, 5)
    finally:
        writer.close()


class _Buffered:
    """A transport whose buffer empties after a few looks."""

    def __init__(self, looks: int, closing: bool = False) -> None:
        self.looks = looks
        self.closing = closing

    def get_write_buffer_size(self) -> int:
        self.looks -= 1
        return max(self.looks, 0)

    def is_closing(self) -> bool:
        return self.closing


async def test_splice_waits_for_the_head_to_leave_aiohttps_buffer() -> None:
    transport = _Buffered(looks=4)
    await _handler._flushed(transport)  # type: ignore[arg-type]
    assert transport.looks == 0
    with pytest.raises(ConnectionResetError):
        await _handler._flushed(_Buffered(looks=4, closing=True))  # type: ignore[arg-type]


@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_large_request_body_is_forwarded_whole(
    framing: str, upstream: ScriptedUpstream, make_proxy: ProxyFactory
) -> None:
    body = PAYLOAD * 3  # over 9 MiB: the upstream write buffer fills and drains

    async def parts() -> AsyncIterator[bytes]:
        for part in pieces(body, [1 << 20]):
            yield part

    proxy = await make_proxy(upstream.url, max_body_bytes=16 * 1024 * 1024)
    async with (
        aiohttp.ClientSession() as client,
        client.post(
            f"http://{proxy.addresses[0]}/api/chat",
            data=body if framing == "length" else parts(),
        ) as response,
    ):
        assert response.status == 200
        assert (await response.json())["received"] == len(body)
    assert upstream.seen[0].body == body
