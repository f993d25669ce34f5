"""The proxy's own HTTP/1.1 client for its one upstream: keep-alive pool, request out,
response head in.

Not aiohttp's client: by the time its parser has shown the response head it has already
decoded the first body bytes, and a streamed body must stay on the upstream socket
undecoded so ``_splice`` can move it kernel-side. Only stdlib asyncio is used here.
"""

from __future__ import annotations

import asyncio
import enum
import os
import re
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from cynode.proxy._config import Upstream

HEAD_LIMIT = 64 * 1024
LINE_LIMIT = 8 * 1024
# The protocol stops reading past this much unconsumed data (flow control upstream).
READ_HIGH_WATER = 256 * 1024
KEEP_IDLE_SECONDS = 15.0
POOL_MAX_IDLE = 16

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_STATUS = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: (.*))?")
_DIGITS = re.compile(rb"[0-9]{1,18}")


class UpstreamError(Exception):
    """The upstream could not be reached, went away, or answered something unusable."""


class Framing(enum.Enum):
    """How the response body is delimited on the upstream connection."""

    NONE = "none"  # HEAD, 1xx, 204, 304
    LENGTH = "length"
    CHUNKED = "chunked"
    CLOSE = "close"  # until the upstream closes


@dataclass
class ResponseHead:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    framing: Framing
    length: int
    keep_alive: bool


class Connection(asyncio.Protocol):
    """One upstream connection: a byte buffer with waits, and write flow control."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._eof = False
        self._lost = False
        self._waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._detached = False
        self._lost_callbacks: list[Callable[[], None]] = []
        # Cleared when a response or request on it ends in a state the next one cannot use.
        self.reusable = True
        self.idle_since = 0.0

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) > READ_HIGH_WATER and not self._reading_paused:
            self._reading_paused = True
            if self.transport is not None:
                self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self.reusable = False
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = self._lost = True
        self.reusable = False
        self._wake()
        self._resume_writers()
        callbacks, self._lost_callbacks = self._lost_callbacks, []
        for callback in callbacks:
            callback()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._resume_writers()

    # -- state ------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """Usable for another request: open, not at EOF, nothing unsolicited buffered."""
        transport = self.transport
        return (
            transport is not None
            and not transport.is_closing()
            and not self._eof
            and not self._buffer
            and self.reusable
        )

    @property
    def buffered(self) -> int:
        """Bytes read from the upstream and not yet consumed."""
        return len(self._buffer)

    def on_lost(self, callback: Callable[[], None]) -> None:
        if self._lost:
            callback()
        else:
            self._lost_callbacks.append(callback)

    def remove_on_lost(self, callback: Callable[[], None]) -> None:
        if callback in self._lost_callbacks:
            self._lost_callbacks.remove(callback)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()

    # -- reading ----------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait_data(self) -> None:
        if self._reading_paused and not self._detached and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _take(self, n: int) -> bytes:
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        if (
            self._reading_paused
            and not self._detached
            and len(self._buffer) <= READ_HIGH_WATER // 4
            and self.transport is not None
        ):
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    async def read(self, limit: int) -> bytes:
        """Up to ``limit`` bytes as soon as any are there; ``b""`` at EOF."""
        while not self._buffer:
            if self._eof:
                return b""
            await self._wait_data()
        return self._take(limit)

    async def read_exactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            if self._eof:
                raise UpstreamError("upstream closed mid-body")
            await self._wait_data()
        return self._take(n)

    async def read_until(self, separator: bytes, limit: int) -> bytes:
        """Bytes up to and including ``separator``; at most ``limit`` bytes long."""
        start = 0
        while True:
            end = self._buffer.find(separator, start)
            if 0 <= end <= limit:
                return self._take(end + len(separator))
            if end > limit or len(self._buffer) > limit:
                raise UpstreamError("upstream sent an over-long line or head")
            if self._eof:
                raise UpstreamError("upstream closed the connection early")
            start = max(0, len(self._buffer) - len(separator) + 1)
            await self._wait_data()

    @property
    def plain(self) -> bool:
        """A plain (not TLS) socket that ``detach()`` can hand out."""
        transport = self.transport
        return (
            transport is not None
            and not transport.is_closing()
            and transport.get_extra_info("sslcontext") is None
            and transport.get_extra_info("socket") is not None
        )

    def detach(self) -> tuple[socket.socket, bytes]:
        """Stop reading through the transport and hand out a dup of its socket plus
        what was already read past the head. Only for a ``plain`` connection."""
        transport = self.transport
        assert transport is not None
        sock = socket.socket(fileno=os.dup(transport.get_extra_info("socket").fileno()))
        sock.setblocking(False)
        self._detached = True
        if not self._reading_paused:
            transport.pause_reading()
            self._reading_paused = True
        leftover = bytes(self._buffer)
        self._buffer.clear()
        return sock, leftover

    def reattach(self) -> None:
        """Resume reading through the transport after a detached relay completed."""
        self._detached = False
        if self._reading_paused and self.transport is not None and not self._lost:
            self._reading_paused = False
            self.transport.resume_reading()

    # -- writing ----------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise UpstreamError("upstream connection closed")
        self.transport.write(data)

    async def drain(self) -> None:
        while self._write_paused and not self._lost:
            self._drain_waiter = self._loop.create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None
        if self._lost:
            raise UpstreamError("upstream connection lost")

    def _resume_writers(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the response head ------------------------------------------------------------

    async def read_response_head(self, method: str) -> ResponseHead:
        """The final response head; interim 1xx responses are read and dropped."""
        while True:
            raw = await self.read_until(b"\r\n\r\n", HEAD_LIMIT)
            head = parse_head(raw, method)
            if head is not None:
                return head


def parse_head(raw: bytes, method: str) -> ResponseHead | None:
    """Parse one response head (ending in a blank line); ``None`` for an interim 1xx."""
    lines = raw[:-4].split(b"\r\n")
    match = _STATUS.fullmatch(lines[0])
    if match is None:
        raise UpstreamError("upstream sent a malformed status line")
    minor, status = int(match.group(1)), int(match.group(2))
    reason = (match.group(3) or b"").decode("latin-1")
    if status == 101:
        raise UpstreamError("upstream switched protocols")
    headers: list[tuple[str, str]] = []
    lengths: set[bytes] = set()
    codings: list[bytes] = []
    connection: set[bytes] = set()
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or _TOKEN.fullmatch(name) is None:
            raise UpstreamError("upstream sent a malformed header line")
        value = value.strip(b" \t")
        if b"\r" in value or b"\n" in value or b"\x00" in value:
            raise UpstreamError("upstream sent a malformed header value")
        lower = name.lower()
        if lower == b"content-length":
            lengths.update(part.strip() for part in value.split(b","))
        elif lower == b"transfer-encoding":
            codings += [c.strip().lower() for c in value.split(b",") if c.strip()]
        elif lower == b"connection":
            connection.update(c.strip().lower() for c in value.split(b","))
        headers.append((name.decode("ascii"), value.decode("utf-8", "replace")))
    if 100 <= status < 200:
        return None
    keep_alive = (minor == 1 and b"close" not in connection) or (
        minor == 0 and b"keep-alive" in connection
    )
    framing, length = Framing.CLOSE, 0
    if method == "HEAD" or status in (204, 304):
        framing = Framing.NONE
    elif codings:
        # Transfer-Encoding wins over Content-Length (RFC 9112 §6.3); a body that is not
        # chunked last runs until the connection closes.
        framing = Framing.CHUNKED if codings[-1] == b"chunked" else Framing.CLOSE
        if lengths or framing is Framing.CLOSE:
            keep_alive = False
    elif lengths:
        if len(lengths) != 1 or _DIGITS.fullmatch(next(iter(lengths))) is None:
            raise UpstreamError("upstream sent an invalid Content-Length")
        framing, length = Framing.LENGTH, int(next(iter(lengths)))
    if framing is Framing.CLOSE:
        keep_alive = False
    return ResponseHead(status, reason, headers, framing, length, keep_alive)


class UpstreamPool:
    """Connections to the one upstream, kept alive between requests (newest first)."""

    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream
        parts = urlsplit(upstream.base_url)
        self.host_header = parts.netloc or "localhost"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl: ssl.SSLContext | None = None
        if parts.scheme == "https" and upstream.unix_path is None:
            self._ssl = ssl.create_default_context()
        self._idle: list[Connection] = []
        self._closed = False

    async def acquire(self) -> tuple[Connection, bool]:
        """An idle kept-alive connection (``True``) or a new one (``False``)."""
        loop = asyncio.get_running_loop()
        while self._idle:
            conn = self._idle.pop()
            if conn.alive and loop.time() - conn.idle_since < KEEP_IDLE_SECONDS:
                return conn, True
            conn.close()
        return await self.connect(), False

    async def send(
        self,
        raw: bytes,
        method: str,
        *,
        resendable: bool,
        written: Callable[[Connection], None],
    ) -> tuple[Connection, ResponseHead]:
        """Writes a request's head (and whatever of it is in `raw`) on a pooled connection
        and reads the response head. `written` learns the connection once the request is
        on it (its caller streams a body on it, or aborts it on a timeout). A kept-alive
        connection the upstream had just closed fails at once; a `resendable` request
        (no body follows, so nothing is lost) goes once more on a fresh connection. A
        connection that failed is aborted here."""
        conn, reused = await self.acquire()
        while True:
            try:
                conn.write(raw)
                written(conn)
                return conn, await conn.read_response_head(method)
            except UpstreamError:
                if not reused or not resendable:
                    conn.abort()
                    raise
            conn.abort()
            conn, reused = await self.connect(), False

    async def connect(self) -> Connection:
        loop = asyncio.get_running_loop()

        def factory() -> Connection:
            return Connection(loop)

        try:
            if self._upstream.unix_path is not None:
                _, conn = await loop.create_unix_connection(factory, self._upstream.unix_path)
            else:
                _, conn = await loop.create_connection(
                    factory, self._host, self._port, ssl=self._ssl
                )
        except OSError as exc:
            raise UpstreamError(f"cannot connect: {type(exc).__name__}: {exc}") from exc
        return conn

    def release(self, conn: Connection) -> None:
        if self._closed or not conn.alive or len(self._idle) >= POOL_MAX_IDLE:
            conn.close()
            return
        conn.idle_since = asyncio.get_running_loop().time()
        self._idle.append(conn)

    def close(self) -> None:
        self._closed = True
        for conn in self._idle:
            conn.close()
        self._idle.clear()


def request_head(method: str, target: str, host: str, headers: list[tuple[str, str]]) -> bytes:
    """The request line and headers; values come from aiohttp's parser (no CR/LF)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")
