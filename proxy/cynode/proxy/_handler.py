"""The request handler: guard, forward, stream back, log one line.

Written against the aiohttp 3.8 API (Debian bookworm's python3-aiohttp runs the
sidecar image) while also running on the newer aiohttp in the development venv.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from cynode.proxy import _policy
from cynode.proxy._config import ProxyConfig

access_log = logging.getLogger("cynode.proxy.access")
log = logging.getLogger("cynode.proxy")

_CHUNK = 64 * 1024


class BodyTooLarge(Exception):
    """The streamed request body passed the cap."""


@dataclass
class _Exchange:
    """What one request did, for the access log and for error mapping."""

    status: int = 0
    bytes_out: int = 0
    body_too_large: bool = False
    upstream: aiohttp.ClientResponse | None = None
    streamed: bool = False


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

    def __init__(self, config: ProxyConfig, session: aiohttp.ClientSession) -> None:
        self._config = config
        self._session = session
        self._base = config.upstream.base_url

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
        verdict = _policy.judge(request.method, raw_path)
        if verdict is _policy.Verdict.FORBIDDEN:
            return error_response(403, "model management is not allowed through this proxy")
        if verdict is _policy.Verdict.NOT_FOUND:
            return error_response(404, "not found")
        if verdict is _policy.Verdict.BAD_METHOD:
            allow = ", ".join(_policy.allowed_methods(raw_path))
            return error_response(405, "method not allowed", Allow=allow)
        declared = request.content_length
        if declared is not None and declared > self._config.max_body_bytes:
            # Refuse before reading a byte; the connection cannot be reused after that.
            response = error_response(413, "request body too large")
            response.force_close()
            return response
        return await self._forward(request, exchange)

    async def _forward(self, request: web.BaseRequest, exchange: _Exchange) -> web.StreamResponse:
        if request.headers.get("Expect", "").lower() == "100-continue":
            # The low-level server does not answer Expect itself; the body is welcome now.
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        headers = CIMultiDict(_policy.request_headers(request.headers.items()))
        data: AsyncIterator[bytes] | None = None
        if request.body_exists:
            data = self._body(request, exchange)
            if request.content_length is not None:
                headers["Content-Length"] = str(request.content_length)
        url = URL(self._base + request.raw_path, encoded=True)
        try:
            async with asyncio.timeout(self._config.timeout):
                upstream = await self._session.request(
                    request.method,
                    url,
                    headers=headers,
                    data=data,
                    allow_redirects=False,
                    skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
                )
        except Exception as exc:
            return self._upstream_failure(exc, exchange)
        exchange.upstream = upstream
        try:
            return await self._relay(request, upstream, exchange)
        finally:
            upstream.close()

    async def _body(self, request: web.BaseRequest, exchange: _Exchange) -> AsyncIterator[bytes]:
        """Stream the client's body upstream, counting against the cap as it goes."""
        seen = 0
        while True:
            chunk = await request.content.read(_CHUNK)
            if not chunk:
                return
            seen += len(chunk)
            if seen > self._config.max_body_bytes:
                exchange.body_too_large = True
                if exchange.upstream is not None:
                    # The upstream already answered and the relay is waiting on it;
                    # closing the connection is what wakes that wait up.
                    exchange.upstream.close()
                raise BodyTooLarge
            yield chunk

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
        self,
        request: web.BaseRequest,
        upstream: aiohttp.ClientResponse,
        exchange: _Exchange,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            status=upstream.status,
            reason=upstream.reason,
            headers=CIMultiDict(_policy.response_headers(upstream.headers.items())),
        )
        exchange.status = upstream.status
        exchange.streamed = True
        idle = self._config.stream_idle_timeout
        try:
            await response.prepare(request)
            while True:
                async with asyncio.timeout(idle):
                    chunk = await upstream.content.readany()
                if not chunk:
                    break
                async with asyncio.timeout(idle):
                    await response.write(chunk)
                exchange.bytes_out += len(chunk)
            if exchange.body_too_large:
                # The upstream ended early because its request was cut; not a success.
                raise BodyTooLarge
            await response.write_eof()
        except asyncio.CancelledError:
            raise
        except ConnectionError:
            # The client went away; aiohttp treats the failed finish as a closed
            # connection, so returning is quieter than raising.
            log.info("client went away after %d bytes", exchange.bytes_out)
        except Exception as exc:
            # The status line is out, so the only honest signal left is a cut connection
            # (a chunked body without its last chunk, or fewer bytes than announced).
            reason = "body too large" if exchange.body_too_large else type(exc).__name__
            log.warning("stream aborted after %d bytes: %s", exchange.bytes_out, reason)
            transport = request.transport
            if transport is not None:
                transport.close()
        return response
