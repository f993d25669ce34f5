"""Shared pieces of the inference-pod tests: the real dev model behind a real relay
socket with the node's proxy host beside it (cold jobs' proxies), and a scripted Ollama
stand-in that records what reaches it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from podman import PodmanClient

from cynode.node.inference.proxy_host import ProxyHost
from cynode.node.inference.relay import InferenceRelay
from cynode.node.runtime.labels import LABEL_ROLE
from cynode.node.runtime.settings import InferencePodSettings
from tests.fixtures.podman import PROXY_IMAGE as PROXY_IMAGE

MODEL = "smollm2:135m"


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class ScriptedOllama:
    """An Ollama stand-in that records every request: /api/tags, /api/version (also the
    client's acknowledgement, see below), a canned streamed /api/chat reply, and an
    /api/generate that stalls forever when its body says "stall" and otherwise streams a
    first chunk, then waits for the client's GET /api/version before the second."""

    reply: str = "scripted reply"
    seen: list[Seen] = field(default_factory=list)
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    stream_log: list[str] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(Seen(request.method, request.path, dict(request.headers), body))
        if request.path == "/api/tags":
            return web.json_response({"models": [{"name": "scripted:1", "model": "scripted:1"}]})
        if request.path == "/api/version":
            self.acked.set()
            return web.json_response({"version": "0.0.0-scripted"})
        if request.path == "/api/generate" and b"stall" in body:
            await asyncio.sleep(3600)
        if request.path == "/api/generate":
            return await self._two_part_stream(request)
        if request.path == "/api/chat":
            return await self._chat(request)
        return web.json_response({"echo": request.path})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        for word in self.reply.split(" "):
            frame = {"message": {"role": "assistant", "content": word + " "}, "done": False}
            await response.write(json.dumps(frame).encode() + b"\n")
        await response.write(
            json.dumps({"message": {"content": ""}, "done": True}).encode() + b"\n"
        )
        await response.write_eof()
        return response

    async def _two_part_stream(self, request: web.Request) -> web.StreamResponse:
        """First chunk, then wait (up to 20 s) for the client's GET /api/version."""
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        await response.write(b'{"response":"first","done":false}\n')
        self.stream_log.append("first sent")
        try:
            await asyncio.wait_for(self.acked.wait(), 20)
            self.stream_log.append("ack before end")
        except TimeoutError:
            self.stream_log.append("no ack")
        await response.write(b'{"response":"second","done":true}\n')
        await response.write_eof()
        self.stream_log.append("finished")
        return response


async def serve(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def relay_to(directory: Path, upstream: str) -> InferenceRelay:
    relay = InferenceRelay(directory, upstream, timeout_s=30)
    await relay.start()
    return relay


@contextlib.asynccontextmanager
async def proxy_host_for(
    client: PodmanClient, relay: InferenceRelay, jobs: int = 4, job_max_connections: int = 64
) -> AsyncIterator[ProxyHost]:
    """The node's proxy host beside `relay`, where settings naming no control socket
    look for it (job_proxy.proxy_host_socket)."""
    settings = InferencePodSettings(
        relay_socket=str(relay.socket_path),
        proxy_image=PROXY_IMAGE,
        job_max_connections=job_max_connections,
    )
    host = ProxyHost(lambda: client, settings, labels={LABEL_ROLE: "proxy-host"}, jobs=jobs)
    await host.start()
    try:
        yield host
    finally:
        await host.close()


@contextlib.asynccontextmanager
async def hosted_relay(
    directory: Path, upstream: str, client: PodmanClient
) -> AsyncIterator[InferenceRelay]:
    """A relay to `upstream` with the proxy host beside it, as the node runs them."""
    relay = await relay_to(directory, upstream)
    try:
        async with proxy_host_for(client, relay):
            yield relay
    finally:
        await relay.close()
