"""A scripted upstream (a real aiohttp server) and helpers to talk to the proxy.

Kept free of imports from ``tests.*`` so this folder also runs alone under another
aiohttp (the sidecar's 3.8) with only this conftest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from cynode.proxy import ProxyConfig, RunningProxy, parse_listen, parse_upstream, start_proxy


@dataclass
class Seen:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes | None = None


@dataclass
class ScriptedUpstream:
    """Records every request; handlers block on events the test controls."""

    url: str = ""
    unix_path: str | None = None
    seen: list[Seen] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    body_errors: list[str] = field(default_factory=list)

    def header_names(self, index: int = -1) -> set[str]:
        return {name.lower() for name, _ in self.seen[index].headers}

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/api/generate", self._stream_ndjson)
        app.router.add_post("/v1/chat/completions", self._stream_sse)
        app.router.add_post("/api/chat", self._echo)
        app.router.add_get("/api/tags", self._tags)
        app.router.add_get("/", self._root)
        app.router.add_post("/api/embed", self._stall)
        app.router.add_post("/api/embeddings", self._stall_mid_stream)
        app.router.add_post("/api/show", self._answer_before_body)
        return app

    async def _record(self, request: web.Request, read_body: bool = True) -> Seen:
        seen = Seen(request.method, request.raw_path, list(request.headers.items()))
        self.seen.append(seen)
        if read_body:
            try:
                seen.body = await request.read()
            except Exception as exc:  # the proxy cut the request on purpose
                self.body_errors.append(type(exc).__name__)
        return seen

    async def _stream_ndjson(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        await response.write(b'{"response":"one","done":false}\n')
        await self.release.wait()
        await response.write(b'{"response":"two","done":true}\n')
        await response.write_eof()
        return response

    async def _stream_sse(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'data: {"n":1}\n\n')
        await self.release.wait()
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _echo(self, request: web.Request) -> web.Response:
        seen = await self._record(request)
        body = seen.body or b""
        return web.json_response(
            {"received": len(body), "sha": hash(body)},
            headers={"Set-Cookie": "session=upstream-secret", "X-Kept": "yes"},
        )

    async def _tags(self, request: web.Request) -> web.Response:
        await self._record(request, read_body=False)
        return web.json_response(
            {"models": []},
            headers={
                "Connection": "X-Resp-Hop",
                "X-Resp-Hop": "1",
                "Keep-Alive": "timeout=5",
                "Proxy-Authenticate": "Basic",
                "Trailer": "X-Trail",
                "Set-Cookie": "a=b",
                "X-Kept": "yes",
            },
        )

    async def _root(self, request: web.Request) -> web.Response:
        await self._record(request, read_body=False)
        return web.Response(text="Ollama is running")

    async def _stall(self, request: web.Request) -> web.Response:
        await self._record(request)
        await self.stop.wait()
        return web.json_response({"late": True})

    async def _stall_mid_stream(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        await response.write(b'{"first":true}\n')
        await self.stop.wait()
        return response

    async def _answer_before_body(self, request: web.Request) -> web.StreamResponse:
        await self._record(request, read_body=False)
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        await response.write(b'{"early":true}\n')
        try:
            body = await request.read()
            await response.write(json.dumps({"got": len(body)}).encode() + b"\n")
        except Exception as exc:
            self.body_errors.append(type(exc).__name__)
        return response


@pytest.fixture
async def upstream(tmp_path: Path) -> AsyncIterator[ScriptedUpstream]:
    """The scripted upstream on TCP 127.0.0.1 and on a Unix socket."""
    scripted = ScriptedUpstream()
    runner = web.AppRunner(scripted.app())
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = runner.addresses[0][1]
    scripted.url = f"http://127.0.0.1:{port}"
    scripted.unix_path = str(tmp_path / "upstream.sock")
    await web.UnixSite(runner, scripted.unix_path).start()
    yield scripted
    scripted.release.set()
    scripted.stop.set()
    await runner.cleanup()


ProxyFactory = Callable[..., Coroutine[Any, Any, RunningProxy]]


@pytest.fixture
async def make_proxy() -> AsyncIterator[ProxyFactory]:
    """Start proxies with overrides; all are closed after the test."""
    started: list[RunningProxy] = []

    async def factory(upstream: str, *listen: str, **overrides: Any) -> RunningProxy:
        config = ProxyConfig(
            upstream=parse_upstream(upstream),
            listen=tuple(parse_listen(text) for text in (listen or ("127.0.0.1:0",))),
            shutdown_timeout=0.5,
            **overrides,
        )
        proxy = await start_proxy(config)
        started.append(proxy)
        return proxy

    yield factory
    for proxy in started:
        await proxy.close()


async def eventually(check: Callable[[], object], within: float = 5.0) -> None:
    """Polls `check` every 25 ms until it holds; fails the test if it never does."""
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"{check.__name__} never held"
        await asyncio.sleep(0.025)


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    complete: bool

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


async def read_response(reader: asyncio.StreamReader) -> RawResponse:
    """Parse one HTTP/1.1 response; ``complete`` is False when the body was cut."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = [
        (name.strip(), value.strip())
        for name, _, value in (line.partition(":") for line in lines[1:] if line)
    ]
    raw = RawResponse(status, headers, b"", True)
    try:
        if (raw.header("Transfer-Encoding") or "").lower() == "chunked":
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                raw.body += await reader.readexactly(size)
                await reader.readexactly(2)
        elif raw.header("Content-Length") is not None:
            raw.body = await reader.readexactly(int(raw.header("Content-Length") or 0))
        else:
            raw.body = await reader.read()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
        raw.complete = False
        if isinstance(exc, asyncio.IncompleteReadError):
            raw.body += exc.partial
    return raw


async def raw_exchange(port: int, request: bytes) -> RawResponse:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(read_response(reader), 10)
    finally:
        writer.close()


# -- a byte-level upstream, for framing the scripted aiohttp upstream cannot produce ------

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes], Coroutine[Any, Any, bool]]


@dataclass
class RawUpstream:
    """An asyncio server that reads each request (head and Content-Length body) and hands
    the connection to ``script``, which writes whatever bytes it likes and returns
    whether to keep the connection for another request."""

    script: Script
    url: str = ""
    unix_path: str | None = None
    heads: list[bytes] = field(default_factory=list)
    connections: int = 0
    errors: list[str] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                self.heads.append(head)
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        await reader.readexactly(int(line.split(b":", 1)[1]))
                if not await self.script(reader, writer, head):
                    return
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            self.errors.append(type(exc).__name__)
        finally:
            writer.close()


@pytest.fixture
async def raw_upstream(tmp_path: Path) -> AsyncIterator[RawUpstream]:
    async def unset(*_: object) -> bool:
        raise AssertionError("no script set")

    raw = RawUpstream(script=unset)
    server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
    raw.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    raw.unix_path = str(tmp_path / "raw-upstream.sock")
    unix_server = await asyncio.start_unix_server(raw.handle, raw.unix_path)
    yield raw
    for srv in (server, unix_server):
        srv.close()
    # Handlers still blocked in a write are cut by closing their transports.
    for srv in (server, unix_server):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(srv.wait_closed(), 2)
