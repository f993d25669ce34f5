"""The inference link through the real relay to a streaming Ollama stand-in on TCP.
The link calls the relay in process (its policy and its upstream pool), not over the
relay's Unix socket, which serves the pods' sidecars; consecutive calls reuse the
relay's kept-alive connection to Ollama, so a call does not pay for a new one before
its first token, nor hand the next queued call a slower start."""

from __future__ import annotations

import asyncio
import json
import logging
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


def _link(
    relay: InferenceRelay,
) -> tuple[InferenceLink, asyncio.Queue[inference_pb2.ServeRequest]]:
    """A link that calls `relay` and puts what it would send up into the queue."""
    link = InferenceLink(
        node_slug="n1",
        channel=grpc.aio.insecure_channel("127.0.0.1:9"),
        auth=NoAuth(),
        relay=lambda: relay,
        capability=lambda: nodes_pb2.InferenceCapability(models=["a:1"], max_concurrency=1),
        allowed_models=lambda: (),
    )
    outbox: asyncio.Queue[inference_pb2.ServeRequest] = asyncio.Queue()
    link._outbox = outbox
    return link, outbox


async def test_consecutive_calls_reuse_every_hops_connection(
    tmp_path: Path, ollama: tuple[str, list[int]]
) -> None:
    url, connections = ollama
    relay = InferenceRelay(tmp_path / "inference", url)
    await relay.start()
    link, outbox = _link(relay)
    try:
        for n in range(3):
            await run_call(link, f"c{n}", link._chat(f"c{n}", chat()))
            got = [outbox.get_nowait() for _ in range(outbox.qsize())]
            assert [m.chunk.chunk.content for m in got] == ["Hel", "lo", ""]
            assert got[-1].chunk.chunk.finish_reason == "stop"
        # One TCP connection from the relay to Ollama for all three calls.
        assert len(connections) == 3 and len(set(connections)) == 1
    finally:
        await link.stop()
        await relay.close()


async def test_calls_go_through_the_relays_policy_without_its_socket(
    tmp_path: Path, ollama: tuple[str, list[int]], caplog: pytest.LogCaptureFixture
) -> None:
    """The socket is the sidecars' door; the link in the same process does not cross
    it (an HTTP client, aiohttp's server and a splice cost about a millisecond before
    the first token), yet every call is one the relay's policy judged and logged."""
    url, connections = ollama
    relay = InferenceRelay(tmp_path / "inference", url)
    socket_path = await relay.start()
    socket_path.unlink()  # no client could reach the relay through its socket now
    link, outbox = _link(relay)
    try:
        with caplog.at_level(logging.INFO, logger="cynode.proxy.access"):
            await run_call(link, "c1", link._chat("c1", chat()))
        got = [outbox.get_nowait() for _ in range(outbox.qsize())]
        assert [m.chunk.chunk.content for m in got] == ["Hel", "lo", ""]
        assert len(connections) == 1
        # Only the access log: other loggers' records land here too once a test before
        # this one has set the root logger to INFO (the whole suite does).
        access = [r for r in caplog.records if r.name == "cynode.proxy.access"]
        assert [r.getMessage().split()[:3] for r in access] == [["POST", "/api/chat", "200"]]
    finally:
        await link.stop()
        await relay.close()
