"""The inference link through the real relay to a streaming Ollama stand-in on TCP:
consecutive calls reuse the kept-alive connections of each hop (link → relay over the
Unix socket, relay → Ollama over TCP), so a call does not pay for new ones before its
first token, nor hand the next queued call a slower start."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from aiohttp import web

from cynode.controlplane.v1 import inference_pb2, nodes_pb2
from cynode.node.inference.link import InferenceLink
from cynode.node.inference.relay import InferenceRelay
from tests.node.inference.test_link import NoAuth, chat, run_call

LINES = [
    {"message": {"content": "Hel"}, "done": False},
    {"message": {"content": "lo"}, "done": False},
    {"message": {"content": ""}, "done": True, "done_reason": "stop",
     "prompt_eval_count": 3, "eval_count": 2},
]  # fmt: skip


@pytest.fixture
async def ollama() -> AsyncIterator[tuple[str, list[int]]]:
    """Streams LINES as NDJSON, one write per line like Ollama; records, per request,
    which TCP connection (by id of its transport) it came on."""
    connections: list[int] = []

    async def chat_handler(request: web.Request) -> web.StreamResponse:
        connections.append(id(request.transport))
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        for line in LINES:
            await response.write(json.dumps(line).encode() + b"\n")
        # The end of the body comes a moment after the done line, as it may from Ollama.
        await asyncio.sleep(0.05)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/api/chat", chat_handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", connections
    await runner.cleanup()


async def test_consecutive_calls_reuse_every_hops_connection(
    tmp_path: Path, ollama: tuple[str, list[int]]
) -> None:
    url, connections = ollama
    relay = InferenceRelay(tmp_path / "inference", url)
    socket_path = await relay.start()
    link = InferenceLink(
        node_slug="n1",
        channel=grpc.aio.insecure_channel("127.0.0.1:9"),
        auth=NoAuth(),
        relay_socket=lambda: socket_path,
        capability=lambda: nodes_pb2.InferenceCapability(models=["a:1"], max_concurrency=1),
        allowed_models=lambda: (),
    )
    outbox: asyncio.Queue[inference_pb2.ServeRequest] = asyncio.Queue()
    link._outbox = outbox
    try:
        for n in range(3):
            await run_call(link, f"c{n}", link._chat(f"c{n}", chat()))
            got = [outbox.get_nowait() for _ in range(outbox.qsize())]
            assert [m.chunk.chunk.content for m in got] == ["Hel", "lo", ""]
            assert got[-1].chunk.chunk.finish_reason == "stop"
        # One TCP connection from the relay to Ollama for all three calls ...
        assert len(connections) == 3 and len(set(connections)) == 1
        # ... and one Unix-socket connection from the link to the relay, kept alive.
        http = await link._client()
        connector = http.connector
        assert connector is not None
        assert sum(len(c) for c in connector._conns.values()) == 1
    finally:
        await link.stop()
        await relay.close()
