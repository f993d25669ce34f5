"""The door's parts on their own: request parsing, secret shapes, the fair queue and the
router's admission, and the link servicer's refusals (over real gRPC)."""

from __future__ import annotations

import asyncio
import base64
import struct
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from cynode.controlplane.v1 import inference_pb2, inference_pb2_grpc
from cynode.inference.v1 import chat_pb2
from cynode.orchestrator.config import ControlPlaneOptions
from cynode.orchestrator.inference.links import LinkRegistry, NodeLink
from cynode.orchestrator.inference.openai_door import (
    _chat_request,
    _embeddings_request,
    _encode,
    _Refused,
)
from cynode.orchestrator.inference.redact import SECRET_REDACTED, redact
from cynode.orchestrator.inference.router import (
    BadInferenceRequest,
    FairQueue,
    NoNode,
    OverLimit,
    Router,
    UnknownModel,
)
from cynode.testing.launchers import DevModel
from cynode.testing.waiting import until
from tests.orchestrator.inference.chatkit import MODEL, Door, NodeAuth, dev_model, running_door

__all__ = ["dev_model"]


# -- parsing ---------------------------------------------------------------------------


def test_chat_bodies_map_to_the_proto_and_unknown_fields_are_ignored() -> None:
    chat, stream, usage = _chat_request(
        {
            "model": "m",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": t} for t in "ab"]},
                {"role": "assistant", "content": None},
            ],
            "max_tokens": 5,
            "max_completion_tokens": 7,
            "temperature": 0.5,
            "top_p": 0.9,
            "stop": "\n",
            "seed": 3,
            "stream": True,
            "stream_options": {"include_usage": True},
            "logprobs": False,
            "tools": [],
        }
    )  # fmt: skip
    assert [(m.role, m.content) for m in chat.messages] == [
        ("system", "be brief"),
        ("user", "ab"),
        ("assistant", ""),
    ]
    o = chat.options
    assert (o.max_tokens, o.temperature, o.top_p, list(o.stop), o.seed) == (7, 0.5, 0.9, ["\n"], 3)
    assert stream and usage
    plain, stream, usage = _chat_request(
        {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    )
    assert not plain.options.HasField("temperature") and not stream and not usage


@pytest.mark.parametrize(
    "body",
    [
        {"messages": [{"role": "user", "content": "x"}]},
        {"model": "m", "messages": []},
        {"model": "m", "messages": ["x"]},
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]},
        {"model": "m", "messages": [{"role": "user", "content": 5}]},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 3},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "top_p": 2},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "seed": 1.5},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": True},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": [1]},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2},
    ],
)
def test_malformed_chat_bodies_are_refused_with_400(body: dict[str, Any]) -> None:
    with pytest.raises(_Refused) as refused:
        _chat_request(body)
    assert refused.value.http_status == 400 and str(refused.value)


def test_embeddings_bodies() -> None:
    request, encoding = _embeddings_request({"model": "m", "input": "a"})
    assert list(request.input) == ["a"] and encoding == "float"
    for body in (
        {"input": "a"},
        {"model": "m", "input": []},
        {"model": "m", "input": [1, 2]},
        {"model": "m", "input": "a", "encoding_format": "int8"},
    ):
        with pytest.raises(_Refused):
            _embeddings_request(body)
    packed = _encode([0.5, -1.0], "base64")
    assert isinstance(packed, str)
    assert struct.unpack("<2f", base64.b64decode(packed)) == (0.5, -1.0)


# -- secrets ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "secret"),
    [
        ("openai_key", "sk-" + "a1B2" * 10),
        ("github_token", "ghp_" + "x9" * 18),
        ("github_token", "github_pat_" + "A1_b" * 8),
        ("aws_access_key", "AKIA" + "ABCDEFGHIJ234567"),
        ("slack_token", "xoxb-1234567890-abcdefghij"),
        ("google_api_key", "AIza" + "S" * 35),
        ("jwt", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_Xg"),
        ("private_key", "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----"),
    ],
)  # fmt: skip
def test_secret_shapes_are_replaced_and_counted(kind: str, secret: str) -> None:
    found: Counter[str] = Counter()
    text = redact(f"before {secret} after", found)
    assert text == f"before {SECRET_REDACTED} after"
    assert found == {kind: 1}


def test_bearer_tokens_and_ordinary_text() -> None:
    found: Counter[str] = Counter()
    assert redact("Authorization: Bearer abcdefghijklmnopqrstuvwxyz0123", found) == (
        f"Authorization: Bearer {SECRET_REDACTED}"
    )
    assert found == {"bearer": 1}
    prose = "The skeleton key is in the desk; ask-me-anything and AKIA are just words."
    assert redact(prose) == prose


# -- the fair queue and the router's admission -----------------------------------------


def link(node: str, models: tuple[str, ...] = ("m",), capacity: int = 1) -> NodeLink:
    return NodeLink(node, node, frozenset(models), capacity=capacity)


async def test_the_fair_queue_serves_the_user_served_longest_ago() -> None:
    links = LinkRegistry()
    queue = FairQueue(links)
    links.on_change = queue.dispatch
    one = link("n1")
    links.add(one)
    first = await queue.acquire("a", "m", 1)
    assert first is one and one.active == 1
    waiting = [asyncio.create_task(queue.acquire("a", "m", 5)) for _ in range(3)]
    await asyncio.sleep(0)
    b = asyncio.create_task(queue.acquire("b", "m", 5))
    await asyncio.sleep(0)
    assert len(queue) == 4
    queue.release(one)
    assert await asyncio.wait_for(b, 1) is one  # B was served before A's three
    await asyncio.sleep(0.05)
    assert not any(t.done() for t in waiting)
    queue.release(one)
    await asyncio.sleep(0.05)
    assert sum(t.done() for t in waiting) == 1
    with pytest.raises(TimeoutError):
        await queue.acquire("c", "other", 0.05)
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    assert len(queue) == 0


async def test_placement_prefers_the_least_busy_node_that_serves_the_model() -> None:
    links = LinkRegistry()
    busy, idle, other = link("busy", capacity=2), link("idle", capacity=2), link("o", ("x",))
    for item in (busy, idle, other):
        links.add(item)
    busy.active = 1
    assert links.place("m") is idle
    idle.active = 2
    assert links.place("m") is busy
    busy.active = 2
    assert links.place("m") is None
    assert links.models() == {"m": 2, "x": 1}
    other.close()
    assert not links.serves("x")


async def test_admission() -> None:
    links = LinkRegistry()
    router = Router(links, user_limit=1, queue_seconds=0.05)
    request = chat_pb2.ChatRequest(model="m")
    with pytest.raises(BadInferenceRequest):
        await anext(router.chat("u", chat_pb2.ChatRequest()))
    with pytest.raises(NoNode):
        await anext(router.chat("u", request))
    links.add(link("n1"))
    with pytest.raises(UnknownModel):
        await router.embeddings("u", chat_pb2.EmbeddingsRequest(model="zz"))
    links.get("n1").active = 1  # type: ignore[union-attr]  # taken by someone else
    with pytest.raises(NoNode, match="within"):
        await anext(router.chat("u", request))
    assert router.in_flight("u") == 0
    router._in_flight["u"] = 1
    with pytest.raises(OverLimit):
        await anext(router.chat("u", request))


# -- the link servicer's refusals, over real gRPC --------------------------------------


@pytest.fixture
async def door(dev_model: DevModel, tmp_path: Path) -> AsyncIterator[Door]:
    options = ControlPlaneOptions(allowed_models=(MODEL, "other:1"))
    async with running_door(dev_model, tmp_path, control_plane=options) as door:
        yield door


async def serve(door: Door, *first: inference_pb2.ServeRequest, slug: str = "s1") -> Any:
    cp = door.orchestrator.control_ports
    assert cp is not None
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{cp.grpc_port}")
    auth = NodeAuth(channel, slug)
    stub = inference_pb2_grpc.InferenceLinkServiceStub(channel)  # type: ignore[no-untyped-call]
    call = stub.Serve(metadata=await auth.metadata())
    for msg in first:
        await call.write(msg)
    return call, channel


def hello(slug: str, *models: str) -> inference_pb2.ServeRequest:
    msg = inference_pb2.ServeRequest()
    msg.hello.node_slug = slug
    msg.hello.inference.models.extend(models)
    return msg


async def test_the_link_servicer_refuses_bad_openings_and_narrows_models(door: Door) -> None:
    stray = inference_pb2.ServeRequest(chunk=inference_pb2.CallChunk(call_id="x"))
    call, channel = await serve(door, stray)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call.read()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await channel.close(None)

    call, channel = await serve(door, hello("someone-else"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call.read()
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    await channel.close(None)

    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{door.orchestrator.control_ports.grpc_port}"  # type: ignore[union-attr]
    ) as anon:
        stub = inference_pb2_grpc.InferenceLinkServiceStub(anon)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Serve().read()
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED

    # The orchestrator's allowed_models narrow what the node announces; a second link of
    # the same node replaces the first.
    first, ch1 = await serve(door, hello("s1", MODEL, "secret-model:7b"))
    assert (await first.read()).HasField("hello_ack")
    second, ch2 = await serve(door, hello("s1", MODEL, "other:1"))
    assert (await second.read()).HasField("hello_ack")
    await second.write(inference_pb2.ServeRequest())  # an empty message is ignored
    assert await first.read() is grpc.aio.EOF  # type: ignore[attr-defined]
    async with httpx.AsyncClient(base_url=door.url) as http:
        models = await http.get(
            "/v1/models", headers={"authorization": f"Bearer {await door.token()}"}
        )
    assert [m["id"] for m in models.json()["data"]] == sorted([MODEL, "other:1"])
    # A hello on the open stream says what the node serves now (allowed_models changed).
    await second.write(hello("s1", "other:1"))
    async with httpx.AsyncClient(base_url=door.url) as http:
        token = await door.token()

        async def served() -> list[str]:
            got = await http.get("/v1/models", headers={"authorization": f"Bearer {token}"})
            return [m["id"] for m in got.json()["data"]]

        await until(lambda: _is(served, ["other:1"]), timeout=10)
    await ch1.close(None)
    await ch2.close(None)


async def _is(get: Any, expected: list[str]) -> bool:
    return bool(await get() == expected)
