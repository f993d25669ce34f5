"""Response bodies: the idle watchdog, chunk headers, and the copying relay.

The copying relay decodes the upstream framing in Python and lets aiohttp frame the
bytes for the client. It serves whatever the zero-copy relay (``_splice``) cannot: a TLS
upstream, a body delimited by the upstream closing, an HTTP/1.0 client of a chunked
body, or a kernel without splice.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

from cynode.proxy._upstream import LINE_LIMIT, Connection, Framing, ResponseHead, UpstreamError

BLOCK = 256 * 1024
TRAILER_LIMIT = 64 * 1024

_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")


class BadChunk(UpstreamError):
    """The upstream's chunked framing is broken."""


def chunk_size(line: bytes) -> tuple[int, bool]:
    """The size in a chunk header line (without CRLF), and whether the line is exactly
    that hex number (so it can be passed on as it is: no extension, no padding)."""
    digits, sep, _ = line.partition(b";")
    bare = digits.rstrip(b" \t")
    if _HEX.fullmatch(bare) is None:
        raise BadChunk("upstream sent a malformed chunk header")
    return int(bare, 16), not sep and bare == digits


class IdleWatchdog:
    """Fires the enclosing ``asyncio.timeout()`` once nothing moved for ``idle`` s.

    ``touch()`` on every bit of progress is one clock read; the timer is re-armed only
    when it comes due, not per chunk. ``moved`` counts payload bytes for the log.
    """

    def __init__(self, timeout: asyncio.Timeout, idle: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._timeout = timeout
        self._idle = idle
        self.last = self._loop.time()
        self.moved = 0
        self._handle: asyncio.TimerHandle | None = self._loop.call_at(self.last + idle, self._check)

    def touch(self) -> None:
        self.last = self._loop.time()

    def _check(self) -> None:
        now = self._loop.time()
        due = self.last + self._idle
        if now >= due:
            self._handle = None
            self._timeout.reschedule(now)
        else:
            self._handle = self._loop.call_at(due, self._check)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


Write = Callable[[bytes], Awaitable[None]]


async def copy_body(
    conn: Connection, head: ResponseHead, write: Write, watchdog: IdleWatchdog
) -> None:
    """Relay the body through Python, counting on ``watchdog``."""
    if head.framing is Framing.CHUNKED:
        await _copy_chunked(conn, write, watchdog)
        return
    left = head.length if head.framing is Framing.LENGTH else -1
    while left:
        data = await conn.read(BLOCK if left < 0 else min(left, BLOCK))
        if not data:
            if left > 0:
                raise UpstreamError("upstream closed mid-body")
            return
        await _pass(data, write, watchdog)
        left = left - len(data) if left > 0 else left


async def _pass(data: bytes, write: Write, watchdog: IdleWatchdog) -> None:
    watchdog.touch()
    await write(data)
    watchdog.touch()
    watchdog.moved += len(data)


async def _copy_chunked(conn: Connection, write: Write, watchdog: IdleWatchdog) -> None:
    while True:
        line = await conn.read_until(b"\r\n", LINE_LIMIT)
        size, _ = chunk_size(line[:-2])
        if size == 0:
            # Trailers are not passed on (nor announced); read up to the blank line.
            seen = 0
            while True:
                trailer = await conn.read_until(b"\r\n", LINE_LIMIT)
                if trailer == b"\r\n":
                    return
                seen += len(trailer)
                if seen > TRAILER_LIMIT:
                    raise BadChunk("upstream sent too many trailers")
        while size:
            data = await conn.read(min(size, BLOCK))
            if not data:
                raise UpstreamError("upstream closed mid-body")
            await _pass(data, write, watchdog)
            size -= len(data)
        if await conn.read_exactly(2) != b"\r\n":
            raise BadChunk("upstream chunk data not followed by CRLF")
