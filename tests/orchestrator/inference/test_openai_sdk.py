"""The OpenAI door with the official `openai` SDK (sync, async, streaming) against the
real path: gateway → control plane → a node's inference link → its relay (the proxy's
policy) → the development model (SmolLM2, its own process)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from cynode.testing.launchers import DevModel
from tests.orchestrator.inference.chatkit import MODEL, Door, Tap, dev_model, running_door

__all__ = ["dev_model"]

pytestmark = pytest.mark.slow

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello in five words."}]


@pytest.fixture
async def door(dev_model: DevModel, tmp_path: Path) -> AsyncIterator[Door]:
    async with running_door(dev_model, tmp_path) as door:
        await door.add_node()
        yield door


def sync_client(door: Door, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{door.url}/v1", api_key=key, max_retries=0, timeout=120)


def async_client(door: Door, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{door.url}/v1", api_key=key, max_retries=0, timeout=120)


async def test_sync_sdk_lists_models_and_completes_a_chat(door: Door) -> None:
    client = sync_client(door, await door.token())
    models = await asyncio.to_thread(client.models.list)
    assert [m.id for m in models.data] == [MODEL]
    assert models.data[0].object == "model" and models.data[0].owned_by == "cynode"
    completion = await asyncio.to_thread(
        lambda: client.chat.completions.create(
            model=MODEL,
            messages=HELLO,
            max_tokens=12,
            temperature=0,
            seed=7,
        )
    )
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 5
    assert 0 < completion.usage.completion_tokens <= 12
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    assert completion.id.startswith("chatcmpl-") and completion.model == MODEL


async def test_max_tokens_is_honoured_with_finish_reason_length(door: Door) -> None:
    client = async_client(door, await door.token())
    completion = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Write a long story about a lighthouse."}],
        max_completion_tokens=5,
        temperature=0,
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 5


async def test_async_sdk_streams_chunks_and_usage(door: Door) -> None:
    client = async_client(door, await door.token())
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Count from one to ten in words."}],
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"some_unknown_field": True},
    )
    pieces: list[str] = []
    finish = None
    usage = None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
            assert chunk.choices == []
            continue
        delta = chunk.choices[0].delta
        if delta.content:
            pieces.append(delta.content)
        if chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    assert len(pieces) > 3, pieces
    assert finish in ("stop", "length")
    assert usage is not None and usage.completion_tokens == len(pieces)


async def test_the_first_chunk_arrives_before_the_model_has_finished(
    dev_model: DevModel, tmp_path: Path
) -> None:
    """Checked at the upstream: a tap between the node's relay and the model notes when
    the model's last frame passed; the client held its first piece before that."""
    tap = await Tap(dev_model.url).start()
    try:
        async with running_door(dev_model, tmp_path) as door:
            await door.add_node(upstream=tap.url)
            client = async_client(door, await door.token())
            stream = await client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "Tell me about the sea."}],
                max_tokens=60,
                temperature=0,
                stream=True,
            )
            first_at = None
            count = 0
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    count += 1
                    if first_at is None:
                        first_at = time.perf_counter()
                        assert not tap.done_at, "the model had already finished"
            assert first_at is not None and count > 10
            assert len(tap.done_at) == 1 and first_at < tap.done_at[0]
    finally:
        await tap.close()


async def test_a_client_that_leaves_mid_stream_stops_the_call_on_the_node(
    dev_model: DevModel, tmp_path: Path
) -> None:
    """The door's event stream watches for the client leaving: the call is cancelled on
    the node, whose relay drops the model's answer long before the model would have
    finished it (SPEC §10.3)."""
    tap = await Tap(dev_model.url).start()
    try:
        async with running_door(dev_model, tmp_path) as door:
            node = await door.add_node(upstream=tap.url)
            client = async_client(door, await door.token())
            stream = await client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "Tell me about the sea."}],
                max_tokens=2000,
                temperature=0,
                stream=True,
            )
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    break
            assert node.link._calls, "the call should be under way on the node"
            await stream.close()
            left = time.perf_counter()
            while node.link._calls:
                assert time.perf_counter() - left < 5, "the node's call was not cancelled"
                await asyncio.sleep(0.02)
            assert tap.done_at == []
    finally:
        await tap.close()


async def test_sync_sdk_streams(door: Door) -> None:
    client = sync_client(door, await door.token())

    def run() -> list[str]:
        stream = client.chat.completions.create(
            model=MODEL,
            messages=HELLO,
            max_tokens=10,
            stream=True,
        )
        return [c.choices[0].delta.content or "" for c in stream if c.choices]

    pieces = await asyncio.to_thread(run)
    assert "".join(pieces).strip()


async def test_embeddings_float_and_base64(door: Door) -> None:
    client = async_client(door, await door.token())
    # The SDK asks for base64 by default and decodes it.
    result = await client.embeddings.create(model=MODEL, input=["a cat", "a dog"])
    assert [d.index for d in result.data] == [0, 1]
    assert len(result.data[0].embedding) > 100
    norm = sum(v * v for v in result.data[0].embedding)
    assert abs(norm - 1.0) < 1e-3
    assert result.usage.prompt_tokens > 0
    floats = await client.embeddings.create(model=MODEL, input="a cat", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(result.data[0].embedding, abs=1e-5)


async def test_wrong_key_is_an_authentication_error(door: Door) -> None:
    client = async_client(door, "not-a-token")
    with pytest.raises(openai.AuthenticationError):
        await client.models.list()
    with pytest.raises(openai.AuthenticationError):
        await client.chat.completions.create(model=MODEL, messages=HELLO)


async def test_unknown_model_is_not_found(door: Door) -> None:
    client = async_client(door, await door.token())
    with pytest.raises(openai.NotFoundError) as err:
        await client.chat.completions.create(model="nope:1b", messages=HELLO)
    assert err.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        await client.embeddings.create(model="nope:1b", input="x")


async def test_malformed_requests_are_400_openai_errors(door: Door) -> None:
    key = await door.token()
    async with httpx.AsyncClient(
        base_url=door.url, headers={"authorization": f"Bearer {key}"}
    ) as http:
        for body in (
            b"{not json",
            b"[]",
            b'{"model": "m"}',
            b'{"model": "m", "messages": [{"role": "wizard", "content": "x"}]}',
            b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}',
            b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": 3}',
        ):
            resp = await http.post("/v1/chat/completions", content=body)
            assert resp.status_code == 400, (body, resp.text)
            assert resp.json()["error"]["type"] == "invalid_request_error"
            assert resp.json()["error"]["message"]
        big = b'{"x": "' + b"a" * (10 * 1024 * 1024) + b'"}'
        resp = await http.post("/v1/chat/completions", content=big)
        assert resp.status_code == 413 and "error" in resp.json()


async def test_no_node_is_503(dev_model: DevModel, tmp_path: Path) -> None:
    async with running_door(dev_model, tmp_path) as door:
        client = async_client(door, await door.token())
        with pytest.raises(openai.InternalServerError) as err:
            await client.chat.completions.create(model=MODEL, messages=HELLO)
        assert err.value.status_code == 503
