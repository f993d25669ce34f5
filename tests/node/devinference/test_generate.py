"""Real generation through /api/generate and /api/chat (SmolLM2-135M on llama.cpp)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from cynode.node.devinference import DevInferenceHandle
from tests.node.devinference.conftest import MODEL, ndjson

pytestmark = pytest.mark.model


def _check_final(final: dict[str, Any], num_predict: int) -> None:
    assert final["done"] is True
    assert final["done_reason"] in ("stop", "length")
    assert 0 < final["eval_count"] <= num_predict
    assert final["prompt_eval_count"] > 0
    assert final["total_duration"] >= final["eval_duration"] >= 0


async def test_generate_streams_ndjson(
    dev_server: DevInferenceHandle, client: aiohttp.ClientSession
) -> None:
    async with client.post(
        f"{dev_server.url}/api/generate",
        json={"model": MODEL, "prompt": "Name a colour.", "options": {"num_predict": 12}},
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/x-ndjson"
        lines = await ndjson(response)
    *pieces, final = lines
    assert pieces, "no token lines before the final line"
    assert all(p["done"] is False and p["model"] == MODEL for p in pieces)
    assert all(p["created_at"].endswith("Z") for p in lines)
    text = "".join(p["response"] for p in pieces)
    assert text.strip()
    _check_final(final, 12)
    assert final["response"] == ""
    assert final["eval_count"] == len(pieces)


async def test_generate_without_stream_is_one_object(
    dev_server: DevInferenceHandle, client: aiohttp.ClientSession
) -> None:
    async with client.post(
        f"{dev_server.url}/api/generate",
        json={
            "model": MODEL,
            "prompt": "Write one word.",
            "system": "You answer briefly.",
            "stream": False,
            "options": {"num_predict": 8},
        },
    ) as response:
        assert response.status == 200
        body = await response.json()
    assert body["response"].strip()
    _check_final(body, 8)


async def test_seed_and_temperature_make_generation_repeatable(
    dev_server: DevInferenceHandle, client: aiohttp.ClientSession
) -> None:
    async def once(seed: int) -> str:
        async with client.post(
            f"{dev_server.url}/api/generate",
            json={
                "model": MODEL,
                "prompt": "Tell me a story about a cat.",
                "stream": False,
                "options": {"num_predict": 16, "seed": seed, "temperature": 1.0},
            },
        ) as response:
            text: str = (await response.json())["response"]
            return text

    first, again = await once(7), await once(7)
    assert first == again
    others = {await once(seed) for seed in (8, 9, 10)}
    assert others != {first}, "different seeds never changed the text"


async def test_raw_generate_continues_the_prompt(
    dev_server: DevInferenceHandle, client: aiohttp.ClientSession
) -> None:
    async with client.post(
        f"{dev_server.url}/api/generate",
        json={
            "model": MODEL,
            "prompt": "The capital of France is",
            "raw": True,
            "stream": False,
            "options": {"num_predict": 6, "temperature": 0},
        },
    ) as response:
        body = await response.json()
    assert "Paris" in body["response"]
    assert body["prompt_eval_count"] >= 5


async def test_chat_streams_assistant_messages(
    dev_server: DevInferenceHandle, client: aiohttp.ClientSession
) -> None:
    async with client.post(
        f"{dev_server.url}/api/chat",
        json={
            "model": "smollm2",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "What is 2+2?"},
            ],
            "options": {"num_predict": 16, "temperature": 0},
        },
    ) as response:
        assert response.status == 200
        lines = await ndjson(response)
    *pieces, final = lines
    assert all(p["message"]["role"] == "assistant" for p in lines)
    text = "".join(p["message"]["content"] for p in pieces)
    assert text.strip()
    assert final["message"] == {"role": "assistant", "content": ""}
    _check_final(final, 16)


async def test_chat_without_stream(
    dev_server: DevInferenceHandle, client: aiohttp.ClientSession
) -> None:
    async with client.post(
        f"{dev_server.url}/api/chat",
        json={
            "model": "smollm2:latest",
            "stream": False,
            "messages": [{"role": "user", "content": "Say hi."}],
            "options": {"num_predict": 8},
        },
    ) as response:
        body = await response.json()
    assert body["message"]["content"].strip()
    assert body["done"] is True


async def test_default_num_predict_applies(
    dev_server: DevInferenceHandle, client: aiohttp.ClientSession
) -> None:
    async with client.post(
        f"{dev_server.url}/api/generate",
        json={"model": MODEL, "prompt": "Count from one to one hundred.", "stream": False},
    ) as response:
        body = await response.json()
    assert body["eval_count"] <= 24  # the fixture's default_num_predict


async def test_stop_sequence_ends_generation(
    dev_server: DevInferenceHandle, client: aiohttp.ClientSession
) -> None:
    async with client.post(
        f"{dev_server.url}/api/generate",
        json={
            "model": MODEL,
            "prompt": "1, 2, 3, 4, 5, 6, 7,",
            "raw": True,
            "stream": False,
            "options": {"num_predict": 20, "temperature": 0, "stop": "10"},
        },
    ) as response:
        body = await response.json()
    assert "10" not in body["response"]
    assert body["done_reason"] == "stop"


async def test_requests_queue_one_at_a_time(
    dev_server: DevInferenceHandle, client: aiohttp.ClientSession
) -> None:
    async def one(prompt: str) -> dict[str, Any]:
        async with client.post(
            f"{dev_server.url}/api/generate",
            json={"model": MODEL, "prompt": prompt, "stream": False, "options": {"num_predict": 6}},
        ) as response:
            assert response.status == 200
            body: dict[str, Any] = await response.json()
            return body

    results = await asyncio.gather(one("Hello"), one("Goodbye"), one("Why?"))
    assert all(r["done"] and r["response"] for r in results)


async def test_client_leaving_mid_stream_frees_the_model(
    dev_server: DevInferenceHandle, client: aiohttp.ClientSession
) -> None:
    reader, writer = await asyncio.open_connection(dev_server.host, dev_server.port)
    body = (
        b'{"model": "smollm2:135m", "prompt": "Write a long essay about the sea.",'
        b' "options": {"num_predict": 1000}}'
    )
    writer.write(
        b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    await writer.drain()
    await asyncio.wait_for(reader.readuntil(b'"done": false}\n'), 60)
    writer.close()
    await writer.wait_closed()
    # Without cancellation this would wait for ~1000 tokens; with it, a few.
    async with client.post(
        f"{dev_server.url}/api/generate",
        json={"model": MODEL, "prompt": "Hi", "stream": False, "options": {"num_predict": 4}},
    ) as response:
        assert (await response.json())["done"] is True
