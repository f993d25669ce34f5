"""The node's inference link, call by call, through a real relay (called in process,
as the node does) to a scripted model server on a Unix socket (the relay with a model
stand-in on TCP in test_link_relay.py, the whole way in tests/orchestrator/inference
and tests/faults/test_chat_node_kill.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from aiohttp import web

from cynode.controlplane.v1 import inference_pb2, nodes_pb2
from cynode.inference.v1 import chat_pb2
from cynode.node.inference.link import InferenceLink, allowed, ollama_chat_body
from cynode.node.inference.relay import InferenceRelay


class NoAuth:
    async def metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def invalidate(self) -> None:
        pass


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def model_server(handler: Handler, timeout_s: float = 10) -> AsyncIterator[InferenceRelay]:
    """`handler` answering every path on a Unix socket, behind a running relay."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    with tempfile.TemporaryDirectory(prefix="cyn-ms-", dir="/tmp") as tmp:
        path = Path(tmp) / "model.sock"
        await web.UnixSite(runner, str(path)).start()
        relay = InferenceRelay(Path(tmp) / "inference", f"unix:{path}", timeout_s=timeout_s)
        await relay.start()
        try:
            yield relay
        finally:
            await relay.close()
            await runner.cleanup()


def answer_with(status: int, body: str | bytes) -> Handler:
    async def handler(_request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, body=body)

    return handler


def make_link(
    relay: InferenceRelay | None = None, allowed_models: tuple[str, ...] = ()
) -> tuple[InferenceLink, asyncio.Queue[inference_pb2.ServeRequest]]:
    caps = nodes_pb2.InferenceCapability(models=["a:1", "b:2"], max_concurrency=2)
    link = InferenceLink(
        node_slug="n1",
        # Never connected: these tests hand calls to the link without a stream.
        channel=grpc.aio.insecure_channel("127.0.0.1:9"),
        auth=NoAuth(),
        relay=lambda: relay,
        capability=lambda: caps,
        allowed_models=lambda: allowed_models,
    )
    outbox: asyncio.Queue[inference_pb2.ServeRequest] = asyncio.Queue()
    link._outbox = outbox  # what a live stream's writer drains
    return link, outbox


def chat(model: str = "a:1") -> chat_pb2.ChatRequest:
    request = chat_pb2.ChatRequest(model=model)
    request.messages.add(role="user", content="hi")
    return request


async def run_call(link: InferenceLink, call_id: str, work: object) -> None:
    link._start(call_id, work)
    await asyncio.gather(*list(link._calls.values()))


async def test_the_hello_announces_only_allowed_models() -> None:
    link, _ = make_link(allowed_models=("b:2",))
    hello = link.hello()
    assert list(hello.inference.models) == ["b:2"] and hello.inference.max_concurrency == 2
    assert list(make_link()[0].hello().inference.models) == ["a:1", "b:2"]
    assert allowed("x", ()) and not allowed("x", ("y",))


def test_sampling_options_map_to_ollamas() -> None:
    request = chat()
    assert ollama_chat_body(request)["options"] == {}
    o = request.options
    o.max_tokens, o.temperature, o.top_p, o.seed = 5, 0.0, 0.5, 7
    o.stop.append("\n")
    body = ollama_chat_body(request)
    assert body["options"] == {
        "num_predict": 5,
        "temperature": 0.0,
        "top_p": 0.5,
        "seed": 7,
        "stop": ["\n"],
    }
    assert body["stream"] is True and body["messages"] == [{"role": "user", "content": "hi"}]


async def test_a_streamed_answer_becomes_chunks_with_usage_last() -> None:
    lines = [
        {"message": {"content": "Hel"}, "done": False},
        {"message": {"content": ""}, "done": False},
        {"message": {"content": "lo"}, "done": False},
        {"message": {"content": ""}, "done": True, "done_reason": "length",
         "prompt_eval_count": 9, "eval_count": 2},
    ]  # fmt: skip
    seen: list[tuple[str, dict[str, object]]] = []

    async def answer(request: web.Request) -> web.StreamResponse:
        seen.append((request.path, await request.json()))
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        for line in lines:  # a write per line, as Ollama streams
            await response.write(json.dumps(line).encode() + b"\n")
        await response.write_eof()
        return response

    async with model_server(answer) as relay:
        link, outbox = make_link(relay)
        await run_call(link, "c1", link._chat("c1", chat()))
        await link.stop()
    got = [outbox.get_nowait().chunk for _ in range(outbox.qsize())]
    assert [c.chunk.content for c in got] == ["Hel", "lo", ""]
    assert {c.call_id for c in got} == {"c1"}
    last = got[-1].chunk
    assert last.finish_reason == "length"
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (9, 2)
    assert seen[0][0] == "/api/chat" and seen[0][1]["model"] == "a:1"


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (404, '{"error": "model not found"}', "not_found"),
        (400, "bad", "bad_request"),
        (500, '{"error": "boom"}', "unavailable"),
        (200, '{"error": "out of memory"}\n', "unavailable"),
        (200, '{"message": {"content": "x"}, "done": false}\n', "unavailable"),
    ],
)
async def test_failures_are_reported_by_kind(status: int, body: str, kind: str) -> None:
    async with model_server(answer_with(status, body)) as relay:
        link, outbox = make_link(relay)
        await run_call(link, "c2", link._chat("c2", chat()))
        await link.stop()
    messages = [outbox.get_nowait() for _ in range(outbox.qsize())]
    failed = [m.call_failed for m in messages if m.WhichOneof("msg") == "call_failed"]
    assert [(f.call_id, f.kind) for f in failed] == [("c2", kind)]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("chat", "not json\n"),
        ("chat", "[1, 2]\n"),
        ("embed", "not json"),
        ("embed", "[1, 2]"),
        ("embed", '{"embeddings": [["x"]]}'),
    ],
)
async def test_an_unreadable_answer_fails_the_call(path: str, body: str) -> None:
    async with model_server(answer_with(200, body)) as relay:
        link, outbox = make_link(relay)
        work = (
            link._chat("c9", chat())
            if path == "chat"
            else link._embed("c9", chat_pb2.EmbeddingsRequest(model="a:1", input=["x"]))
        )
        await run_call(link, "c9", work)
        await link.stop()
    messages = [outbox.get_nowait() for _ in range(outbox.qsize())]
    assert [(m.call_failed.call_id, m.call_failed.kind) for m in messages] == [
        ("c9", "unavailable")
    ]


async def test_a_model_outside_allowed_models_is_refused_on_the_node() -> None:
    calls: list[str] = []

    async def answer(request: web.Request) -> web.StreamResponse:
        calls.append(request.path)
        return web.Response()

    async with model_server(answer) as relay:
        link, outbox = make_link(relay, allowed_models=("b:2",))
        await run_call(link, "c3", link._chat("c3", chat("a:1")))
        await run_call(link, "c4", link._embed("c4", chat_pb2.EmbeddingsRequest(model="a:1")))
        await link.stop()
    kinds = [outbox.get_nowait().call_failed.kind for _ in range(outbox.qsize())]
    assert kinds == ["refused", "refused"] and calls == []


async def test_embeddings_and_an_unreachable_model_server() -> None:
    async def answer(request: web.Request) -> web.StreamResponse:
        assert request.path == "/api/embed"
        assert await request.json() == {"model": "a:1", "input": ["x", "y"]}
        return web.json_response({"embeddings": [[0.5, 0.5], [1.0, 0.0]], "prompt_eval_count": 4})

    request = chat_pb2.EmbeddingsRequest(model="a:1", input=["x", "y"])
    async with model_server(answer) as relay:
        link, outbox = make_link(relay)
        await run_call(link, "c5", link._embed("c5", request))
        await run_call(link, "c5b", link._embed("c5b", request))  # the kept-alive connection
        await link.stop()
    assert outbox.qsize() == 2
    result = outbox.get_nowait().embeddings.result
    assert [list(e.values) for e in result.data] == [[0.5, 0.5], [1.0, 0.0]]
    assert result.usage.prompt_tokens == 4

    with tempfile.TemporaryDirectory(prefix="cyn-ms-", dir="/tmp") as tmp:
        # The relay runs, but nothing listens where its model server should be.
        gone = InferenceRelay(Path(tmp) / "inference", f"unix:{tmp}/none.sock")
        await gone.start()
        link, outbox = make_link(gone)
        await run_call(link, "c6", link._embed("c6", request))
        await gone.close()
    assert outbox.get_nowait().call_failed.kind == "unavailable"
    await link.stop()
    # No relay running at all: the same answer.
    link, outbox = make_link(None)
    await run_call(link, "c6b", link._chat("c6b", chat()))
    assert outbox.get_nowait().call_failed.kind == "unavailable"
    await link.stop()


async def test_a_cancel_stops_the_call() -> None:
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.sleep(3600)

    link, _ = make_link()
    link._start("c7", hang())
    await started.wait()
    task = link._calls["c7"]
    link._handle(inference_pb2.ServeResponse(cancel=inference_pb2.CancelCall(call_id="c7")))
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "c7" not in link._calls


async def test_lines_split_across_writes_and_a_body_that_lingers_after_done(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A line may come in pieces; a body that goes on after the done line is left after
    DRAIN_S, the answer already complete."""
    monkeypatch.setattr("cynode.node.inference.link.DRAIN_S", 0.2)
    linger = asyncio.Event()

    async def answer(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        await response.write(b'{"message": {"content": "He')
        await response.write(
            b'l"}, "done": false}\n\n{"message": {"content": "lo"}, "done": false}\n'
        )
        await response.write(b'{"done": true, "eval_count": 2}\n')
        await linger.wait()
        return response

    async with model_server(answer) as relay:
        link, outbox = make_link(relay)
        started = asyncio.get_running_loop().time()
        await run_call(link, "c10", link._chat("c10", chat()))
        assert asyncio.get_running_loop().time() - started < 5
        linger.set()
        await link.stop()
    got = [outbox.get_nowait() for _ in range(outbox.qsize())]
    assert [m.chunk.chunk.content for m in got] == ["Hel", "lo", ""]
    assert got[-1].chunk.chunk.finish_reason == "stop"
    assert got[-1].chunk.chunk.usage.completion_tokens == 2


async def test_a_last_line_without_its_newline_is_read_at_the_end() -> None:
    body = b'{"message": {"content": "x"}, "done": false}\n{"done": true}'
    async with model_server(answer_with(200, body)) as relay:
        link, outbox = make_link(relay)
        await run_call(link, "c12", link._chat("c12", chat()))
        await link.stop()
    got = [outbox.get_nowait().chunk.chunk for _ in range(outbox.qsize())]
    assert [(c.content, c.finish_reason) for c in got] == [("x", ""), ("", "stop")]


async def test_an_over_long_line_fails_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("cynode.node.inference.link.LINE_LIMIT", 16)
    for n, body in enumerate((b"x" * 64, b'{"done": false}\n' + b"x" * 64)):
        async with model_server(answer_with(200, body)) as relay:
            link, outbox = make_link(relay)
            await run_call(link, f"c11-{n}", link._chat(f"c11-{n}", chat()))
            await link.stop()
        assert outbox.get_nowait().call_failed.kind == "unavailable"


async def test_an_answer_that_falls_silent_fails_at_the_relays_timeout() -> None:
    stop = asyncio.Event()

    async def answer(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        await response.write(b'{"message": {"content": "x"}, "done": false}\n')
        await stop.wait()
        return response

    async with model_server(answer, timeout_s=0.3) as relay:
        link, outbox = make_link(relay)
        await run_call(link, "c13", link._chat("c13", chat()))
        stop.set()
        await link.stop()
    got = [outbox.get_nowait() for _ in range(outbox.qsize())]
    assert got[0].chunk.chunk.content == "x"
    assert (got[-1].call_failed.call_id, got[-1].call_failed.kind) == ("c13", "unavailable")
