"""A call through a running proxy from its own process, without crossing a socket.

The node's inference link runs in the same process and event loop as the node's relay.
Over the relay's Unix socket each call paid for an HTTP client writing and parsing,
aiohttp's server parsing and answering, a pipe set up for the splice and several turns
of the loop, all before the first line reached the link (docs/openai-door.md). Here the
call takes the same steps as the listeners' handler, in the same order, with the same
code: the path allowlist and the methods (`_policy.refusal`), the body cap, the header
filters both ways (no credentials, no hop-by-hop), the upstream pool and its kept-alive
connections, the timeout for the response head (504) and for the silence between two
streamed chunks, the 502 for an upstream out of reach, one access log line. Only the
client connection is missing, so the body is decoded for the caller instead of being
framed again for a socket.

    async with proxy.call("POST", "/api/chat", body) as answer:
        if answer.status == 200:
            await answer.stream(on_bytes)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable

from cynode.proxy import _policy
from cynode.proxy._body import IdleWatchdog, Write, copy_body
from cynode.proxy._config import ProxyConfig
from cynode.proxy._upstream import (
    Connection,
    Framing,
    ResponseHead,
    UpstreamError,
    UpstreamPool,
    request_head,
)

access_log = logging.getLogger("cynode.proxy.access")
log = logging.getLogger("cynode.proxy")


class Answer:
    """The upstream's answer (or the proxy's own refusal): status, filtered headers,
    and the body through `read()` or `stream()`, once."""

    def __init__(
        self,
        status: int,
        headers: list[tuple[str, str]],
        *,
        body: bytes = b"",
        conn: Connection | None = None,
        head: ResponseHead | None = None,
        idle_timeout: float = 0.0,
    ) -> None:
        self.status = status
        self.headers = headers
        self._body = body
        self._conn = conn
        self._head = head
        self._idle = idle_timeout
        self._used = False
        # The body was read to its end: the upstream connection may serve another call.
        self.complete = conn is None
        self.moved = len(body)

    async def stream(self, write: Write) -> None:
        """Hands each piece of the body to `write` as it arrives. A silence longer than
        the proxy's idle timeout raises TimeoutError; a broken upstream, UpstreamError."""
        if self._used:
            raise RuntimeError("the answer's body was already read")
        self._used = True
        conn, head = self._conn, self._head
        if conn is None or head is None:
            if self._body:
                await write(self._body)
            return
        if head.framing is not Framing.NONE:
            async with asyncio.timeout(None) as timeout:
                watchdog = IdleWatchdog(timeout, self._idle)
                try:
                    await copy_body(conn, head, write, watchdog)
                finally:
                    watchdog.stop()
                    self.moved = watchdog.moved
        self.complete = head.keep_alive

    async def read(self) -> bytes:
        """The whole body."""
        parts: list[bytes] = []

        async def keep(data: bytes) -> None:
            parts.append(data)

        await self.stream(keep)
        return b"".join(parts)


def _error(status: int, message: str, **headers: str) -> Answer:
    """The same `{"error": ...}` body the listeners answer with."""
    return Answer(
        status,
        [("Content-Type", "application/json"), *headers.items()],
        body=json.dumps({"error": message}).encode(),
    )


@contextlib.asynccontextmanager
async def call(
    config: ProxyConfig,
    pool: UpstreamPool,
    method: str,
    path: str,
    body: bytes = b"",
    headers: Iterable[tuple[str, str]] = (),
    *,
    head_timeout: float | None = None,
) -> AsyncIterator[Answer]:
    """One request through the proxy's policy to its upstream. `head_timeout` may shorten
    the proxy's wait for the response head (never lengthen it). The upstream connection
    goes back to the pool when the body was read to its end, else it is closed."""
    started = time.monotonic()
    raw_path = path.split("?", 1)[0]
    conn: Connection | None = None
    answer: Answer | None = None
    try:
        answer, conn = await _open(
            config, pool, method, path, raw_path, body, headers, head_timeout
        )
        yield answer
    finally:
        if conn is not None:
            if answer is not None and answer.complete:
                pool.release(conn)
            else:
                conn.abort()
        # Method, path, status, bytes, duration; never headers, query or bodies.
        access_log.info(
            "%s %s %d %d %.1fms",
            method,
            raw_path,
            answer.status if answer is not None else 0,
            answer.moved if answer is not None else 0,
            (time.monotonic() - started) * 1000.0,
        )


async def _open(
    config: ProxyConfig,
    pool: UpstreamPool,
    method: str,
    path: str,
    raw_path: str,
    body: bytes,
    headers: Iterable[tuple[str, str]],
    head_timeout: float | None,
) -> tuple[Answer, Connection | None]:
    refused = _policy.refusal(method, raw_path)
    if refused is not None:
        status, message, extra = refused
        return _error(status, message, **extra), None
    if len(body) > config.max_body_bytes:
        return _error(413, "request body too large"), None
    sent = _policy.request_headers(headers)
    if body or method == "POST":
        sent.append(("Content-Length", str(len(body))))
    raw = request_head(method, path, pool.host_header, sent) + body
    wait = config.timeout if head_timeout is None else min(head_timeout, config.timeout)
    conn: Connection | None = None

    def written(sent_on: Connection) -> None:
        nonlocal conn
        conn = sent_on

    try:
        async with asyncio.timeout(wait):
            conn, head = await pool.send(raw, method, resendable=not body, written=written)
    except TimeoutError:
        if conn is not None:
            conn.abort()
        log.warning("upstream did not answer within %.1fs", wait)
        return _error(504, "upstream timed out"), None
    except (UpstreamError, OSError) as exc:  # the pool aborted what failed
        log.warning("upstream unavailable: %s: %s", type(exc).__name__, exc)
        return _error(502, "upstream unavailable"), None
    return (
        Answer(
            head.status,
            _policy.response_headers(head.headers),
            conn=conn,
            head=head,
            idle_timeout=config.stream_idle_timeout,
        ),
        conn,
    )
