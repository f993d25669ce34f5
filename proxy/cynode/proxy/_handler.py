"""The request handler: guard, forward, stream back, log one line.

Written against the aiohttp 3.8 API (Debian bookworm's python3-aiohttp runs the
sidecar image) while also running on the newer aiohttp in the development venv.
aiohttp serves the client side only; the upstream side is ``_upstream``'s own client,
so that a response body can be relayed by ``_splice`` without passing through Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import socket
import time
from dataclasses import dataclass

from aiohttp import web
from aiohttp.http import HttpVersion11
from multidict import CIMultiDict

from cynode.proxy import _policy, _splice
from cynode.proxy._body import IdleWatchdog, copy_body
from cynode.proxy._config import ProxyConfig
from cynode.proxy._upstream import (
    Connection,
    Framing,
    ResponseHead,
    UpstreamPool,
    request_head,
)

access_log = logging.getLogger("cynode.proxy.access")
log = logging.getLogger("cynode.proxy")

_CHUNK = 64 * 1024
# Unsent bytes a loopback client's socket may hold (see _tune_client); 32 KiB to 1 MiB
# measured alike, all far below no limit.
NOTSENT_LOWAT = 128 * 1024
# A Unix client socket's send buffer (see _tune_client): one pipe-full; 4 MiB measured
# no better.
UNIX_SNDBUF = 1024 * 1024


class BodyTooLarge(Exception):
    """The streamed request body passed the cap."""


@dataclass
class _Exchange:
    """What one request did, for the access log, error mapping and upstream reuse."""

    status: int = 0
    bytes_out: int = 0
    body_too_large: bool = False
    conn: Connection | None = None
    body_task: asyncio.Task[None] | None = None
    body_sent: bool = False
    streamed: bool = False
    # Set once the response body was read to its end and the upstream may be reused.
    complete: bool = False


def error_response(status: int, message: str, **headers: str) -> web.Response:
    """The small JSON error shape Ollama clients parse: ``{"error": "..."}``."""
    return web.Response(
        status=status,
        text=json.dumps({"error": message}),
        content_type="application/json",
        headers=headers or None,
    )


class ProxyHandler:
    """Callable handed to ``aiohttp.web.Server``; one instance per running proxy."""

    def __init__(self, config: ProxyConfig, pool: UpstreamPool) -> None:
        self._config = config
        self._pool = pool
        self._turns = asyncio.Semaphore(config.max_in_flight) if config.max_in_flight else None

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.monotonic()
        exchange = _Exchange()
        raw_path = request.raw_path.split("?", 1)[0]
        try:
            response = await self._handle(request, raw_path, exchange)
            # Not ``response.prepared``: aiohttp 3.8 clears it again after write_eof.
            if not exchange.streamed:
                exchange.status = response.status
                body = getattr(response, "body", None)
                exchange.bytes_out = len(body) if isinstance(body, bytes) else 0
            return response
        finally:
            # Method, path, status, bytes, duration; never headers, query or bodies.
            access_log.info(
                "%s %s %d %d %.1fms",
                request.method,
                raw_path,
                exchange.status,
                exchange.bytes_out,
                (time.monotonic() - started) * 1000.0,
            )

    async def _handle(
        self, request: web.BaseRequest, raw_path: str, exchange: _Exchange
    ) -> web.StreamResponse:
        if raw_path == _policy.HEALTH_PATH:
            if request.method not in ("GET", "HEAD"):
                return error_response(405, "method not allowed", Allow="GET, HEAD")
            return web.Response(text="ok")
        refused = _policy.refusal(request.method, raw_path)
        if refused is not None:
            status, message, headers = refused
            return error_response(status, message, **headers)
        declared = request.content_length
        if declared is not None and declared > self._config.max_body_bytes:
            # Refuse before reading a byte; the connection cannot be reused after that.
            response = error_response(413, "request body too large")
            response.force_close()
            return response
        if self._turns is None:
            return await self._forward(request, exchange)
        # The whole exchange, its streamed answer included, holds its turn.
        async with self._turns:
            return await self._forward(request, exchange)

    async def _forward(self, request: web.BaseRequest, exchange: _Exchange) -> web.StreamResponse:
        if request.headers.get("Expect", "").lower() == "100-continue":
            # The low-level server does not answer Expect itself; the body is welcome now.
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        headers = _policy.request_headers(request.headers.items())
        has_body = request.body_exists
        chunked = False
        if has_body and request.content_length is not None:
            headers.append(("Content-Length", str(request.content_length)))
        elif has_body:
            headers.append(("Transfer-Encoding", "chunked"))
            chunked = True
        elif request.method == "POST":
            headers.append(("Content-Length", "0"))
        raw = request_head(request.method, request.raw_path, self._pool.host_header, headers)
        try:
            try:
                async with asyncio.timeout(self._config.timeout):
                    head = await self._send(request, raw, has_body, chunked, exchange)
            except Exception as exc:
                return self._upstream_failure(exc, exchange)
            return await self._relay(request, head, exchange)
        finally:
            self._settle(exchange)

    async def _send(
        self,
        request: web.BaseRequest,
        raw: bytes,
        has_body: bool,
        chunked: bool,
        exchange: _Exchange,
    ) -> ResponseHead:
        """Send the request and read the response head (the phase ``timeout`` bounds)."""

        def written(conn: Connection) -> None:
            exchange.conn = conn
            if has_body:
                exchange.body_task = asyncio.create_task(
                    self._send_body(request, conn, chunked, exchange)
                )

        _, head = await self._pool.send(
            raw, request.method, resendable=not has_body, written=written
        )
        return head

    async def _send_body(
        self, request: web.BaseRequest, conn: Connection, chunked: bool, exchange: _Exchange
    ) -> None:
        """Stream the client's body upstream, counting against the cap as it goes."""
        seen = 0
        try:
            while True:
                chunk = await request.content.read(_CHUNK)
                if not chunk:
                    break
                seen += len(chunk)
                if seen > self._config.max_body_bytes:
                    exchange.body_too_large = True
                    # Cutting the upstream connection is what ends the wait for its
                    # head, or the relay of a response it already started.
                    conn.abort()
                    return
                conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                await conn.drain()
            if chunked:
                conn.write(b"0\r\n\r\n")
            exchange.body_sent = True
        except Exception as exc:
            log.info("request body not forwarded: %s", type(exc).__name__)
            conn.abort()

    def _settle(self, exchange: _Exchange) -> None:
        """Give the upstream connection back to the pool, or close it."""
        task = exchange.body_task
        if task is not None and not task.done():
            task.cancel()
        conn = exchange.conn
        if conn is None:
            return
        if exchange.complete and (task is None or exchange.body_sent):
            self._pool.release(conn)
        else:
            conn.abort()

    def _upstream_failure(self, exc: BaseException, exchange: _Exchange) -> web.Response:
        if exchange.body_too_large:
            response = error_response(413, "request body too large")
            response.force_close()
            return response
        if isinstance(exc, TimeoutError):
            log.warning("upstream did not answer within %.1fs", self._config.timeout)
            return error_response(504, "upstream timed out")
        # The exception text may name the socket path or host; that is operator
        # information, so it goes to the log and the client gets a fixed message.
        log.warning("upstream unavailable: %s: %s", type(exc).__name__, exc)
        return error_response(502, "upstream unavailable")

    async def _relay(
        self, request: web.BaseRequest, head: ResponseHead, exchange: _Exchange
    ) -> web.StreamResponse:
        headers = CIMultiDict(_policy.response_headers(head.headers))
        if head.framing in (Framing.CHUNKED, Framing.CLOSE):
            headers.popall("Content-Length", None)
        response = web.StreamResponse(status=head.status, reason=head.reason, headers=headers)
        client_chunked = head.framing in (Framing.CHUNKED, Framing.CLOSE) and (
            request.version >= HttpVersion11
        )
        if client_chunked:
            response.enable_chunked_encoding()
        elif head.framing is Framing.NONE:
            # No body (HEAD, 204, 304), so none is framed. aiohttp 3.8 frames a response
            # without Content-Length chunked unless it is a 204, and so would end a HEAD
            # answer or a 304 with a last chunk the client reads as its next response;
            # newer aiohttp knows these have no body. The attribute is what aiohttp's
            # own FileResponse sets to the same end, in 3.8 and since.
            response._length_check = False
        exchange.status = head.status
        exchange.streamed = True
        try:
            writer = await response.prepare(request)
            # Newer aiohttp may hold the head back until the first body write.
            send_headers = getattr(writer, "send_headers", None)
            if send_headers is not None:
                send_headers()
            if head.framing is not Framing.NONE:
                async with asyncio.timeout(None) as timeout:
                    watchdog = IdleWatchdog(timeout, self._config.stream_idle_timeout)
                    try:
                        await self._body(request, response, head, exchange, watchdog)
                    finally:
                        watchdog.stop()
                        exchange.bytes_out = watchdog.moved
            if exchange.body_too_large:
                # The upstream ended early because its request was cut; not a success.
                raise BodyTooLarge
            exchange.complete = head.keep_alive
            await response.write_eof()
        except asyncio.CancelledError:
            exchange.complete = False
            raise
        except ConnectionError:
            # The client went away; aiohttp treats the failed finish as a closed
            # connection, so returning is quieter than raising.
            exchange.complete = False
            log.info("client went away after %d bytes", exchange.bytes_out)
        except Exception as exc:
            # The status line is out, so the only honest signal left is a cut connection
            # (a chunked body without its last chunk, or fewer bytes than announced).
            exchange.complete = False
            reason = "body too large" if exchange.body_too_large else type(exc).__name__
            log.warning("stream aborted after %d bytes: %s", exchange.bytes_out, reason)
            transport = request.transport
            if transport is not None:
                transport.close()
        return response

    async def _body(
        self,
        request: web.BaseRequest,
        response: web.StreamResponse,
        head: ResponseHead,
        exchange: _Exchange,
        watchdog: IdleWatchdog,
    ) -> None:
        conn = exchange.conn
        assert conn is not None
        transport = request.transport
        in_hand = head.framing is Framing.LENGTH and conn.buffered >= head.length
        if transport is not None and not in_hand:
            _tune_client(transport)
        # A short answer that is already read whole is cheaper to write than to set a
        # pipe up for.
        zero_copy = (head.framing is Framing.LENGTH and not in_hand) or (
            head.framing is Framing.CHUNKED and request.version >= HttpVersion11
        )
        # A TLS upstream's bytes have to be decrypted in Python anyway.
        if zero_copy and transport is not None and conn.plain and _splice.available():
            client = _plain_socket(transport)
            if client is not None:
                await self._splice_body(transport, client, conn, head, watchdog)
                return
        await copy_body(conn, head, response.write, watchdog)

    async def _splice_body(
        self,
        transport: asyncio.WriteTransport,
        client: int,
        conn: Connection,
        head: ResponseHead,
        watchdog: IdleWatchdog,
    ) -> None:
        src, leftover = conn.detach()
        dst = socket.socket(fileno=os.dup(client))
        relay = _splice.SpliceRelay(src, leftover, dst, head.framing, head.length, watchdog.touch)
        conn.on_lost(relay.fail)
        try:
            await _flushed(transport)
            await relay.run()
        finally:
            watchdog.moved = relay.moved
            conn.remove_on_lost(relay.fail)
            dst.close()
            src.close()
        conn.reattach()


def _tune_client(transport: asyncio.BaseTransport) -> None:
    """Tune the connection to a client on this host for a large answer: the sandbox's
    to its sidecar (TCP on the pod's loopback) and the sidecar's to the node's relay (a
    Unix socket). Peers elsewhere keep the host's settings; a refusal changes nothing.

    - Unix socket: a send buffer of ``UNIX_SNDBUF``. A Unix stream holds only what the
      sender's buffer allows (208 KiB by default), so each side woke for about a fifth
      of a pipe-full; the hop then cost the relay and the sidecar twice the CPU per
      byte. The kernel caps it at net.core.wmem_max.
    - TCP: Reno instead of the host's congestion control. A loopback hop has no
      congestion to control, but a pacing algorithm such as BBR (some hosts' default)
      spaces the segments with a timer per burst, which cost this process about as
      much as the splicing itself. The kernel always has Reno and lets unprivileged
      processes pick it unless configured otherwise.
    - TCP: at most ``NOTSENT_LOWAT`` bytes queued unsent. What waits in the socket for
      the client's window to open is sent when the client's read opens it, in the
      client's time (loopback runs the whole delivery in the sender's context). With a
      pipe-full queued there, a client reading through the proxy spent up to twice the
      CPU per byte of one reading the upstream directly; with the queue short, the rest
      stays in the pipe until this process sends it."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    if sock.family == socket.AF_UNIX:
        with contextlib.suppress(OSError):
            # The kernel reports twice what was asked (its bookkeeping overhead).
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) < 2 * UNIX_SNDBUF:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, UNIX_SNDBUF)
        return
    peer = transport.get_extra_info("peername")
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or not peer:
        return
    try:
        address = ipaddress.ip_address(peer[0])
    except ValueError:  # pragma: no cover - asyncio gives numeric addresses
        return
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a v4 client of a dual-stack listener
    if address.is_loopback:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"reno")
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, NOTSENT_LOWAT)


def _plain_socket(transport: asyncio.BaseTransport) -> int | None:
    """The client socket's descriptor, if the transport is a plain socket one."""
    if transport.is_closing() or transport.get_extra_info("sslcontext") is not None:
        return None
    sock = transport.get_extra_info("socket")
    return None if sock is None else int(sock.fileno())


async def _flushed(transport: asyncio.WriteTransport) -> None:
    """Wait until aiohttp's writes (the response head) have all reached the socket, so
    that bytes written around the transport land after them."""
    while transport.get_write_buffer_size():
        if transport.is_closing():
            raise ConnectionResetError("client connection closed")
        await asyncio.sleep(0.001)
