"""The OpenAI-compatible endpoints on the real model."""

from __future__ import annotations

import json

import aiohttp
import pytest

from cynode.node.devinference import DevInferenceHandle
from tests.node.devinference.conftest import MODEL

pytestmark = pytest.mark.model


async def test_models_lists_the_model(
    dev_server: DevInferenceHandle, client: aiohttp.ClientSession
) -> None:
    async with client.get(f"{dev_server.url}/v1/models") as response:
        body = await response.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == [MODEL]


async def test_chat_completion_streams_sse(
    dev_server: DevInferenceHandle, client: aiohttp.ClientSession
) -> None:
    async with client.post(
        f"{dev_server.url}/v1/chat/completions",
        json={
            "model": MODEL,
            "stream": True,
            "max_tokens": 10,
            "seed": 1,
            "messages": [{"role": "user", "content": "Say something."}],
        },
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        raw = (await response.read()).decode()
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[len("data: ") :]) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == MODEL for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text.strip()
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


async def test_chat_completion_whole(
    dev_server: DevInferenceHandle, client: aiohttp.ClientSession
) -> None:
    async with client.post(
        f"{dev_server.url}/v1/chat/completions",
        json={
            "model": MODEL,
            "max_completion_tokens": 8,
            "stop": "\n\n",
            "messages": [{"role": "user", "content": "Hi!"}],
        },
    ) as response:
        body = await response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"].strip()
    assert 0 < body["usage"]["completion_tokens"] <= 8


async def test_text_completion(
    dev_server: DevInferenceHandle, client: aiohttp.ClientSession
) -> None:
    async with client.post(
        f"{dev_server.url}/v1/completions",
        json={
            "model": MODEL,
            "prompt": "The capital of France is",
            "max_tokens": 5,
            "temperature": 0,
        },
    ) as response:
        body = await response.json()
    assert "Paris" in body["choices"][0]["text"]
    async with client.post(
        f"{dev_server.url}/v1/completions",
        json={"model": MODEL, "prompt": "One, two,", "max_tokens": 4, "stream": True},
    ) as response:
        raw = (await response.read()).decode()
    assert raw.endswith("data: [DONE]\n\n")


async def test_embeddings(dev_server: DevInferenceHandle, client: aiohttp.ClientSession) -> None:
    async with client.post(
        f"{dev_server.url}/v1/embeddings", json={"model": MODEL, "input": ["a", "b"]}
    ) as response:
        body = await response.json()
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert len(body["data"][0]["embedding"]) == 576
    assert body["usage"]["prompt_tokens"] > 0


@pytest.mark.parametrize(
    ("path", "payload", "status"),
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}, 400),
        ("/v1/chat/completions", {"model": "gpt-4o", "messages": []}, 404),
        ("/v1/chat/completions", {"model": MODEL, "messages": []}, 400),
        ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user"}]}, 400),
        ("/v1/completions", {"model": MODEL, "prompt": ["x"]}, 400),
        ("/v1/completions", {"model": MODEL, "prompt": "x", "stop": [1]}, 400),
        ("/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": "many"}, 400),
        ("/v1/completions", {"model": MODEL, "prompt": "word " * 1100}, 400),
        ("/v1/embeddings", {"model": MODEL, "input": []}, 400),
        ("/v1/embeddings", {"model": MODEL, "input": [3]}, 400),
        ("/v1/embeddings", [MODEL], 400),
    ],
)
async def test_refusals_are_openai_errors(
    dev_server: DevInferenceHandle,
    client: aiohttp.ClientSession,
    path: str,
    payload: object,
    status: int,
) -> None:
    async with client.post(f"{dev_server.url}{path}", json=payload) as response:
        assert response.status == status
        error = (await response.json())["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"]


async def test_invalid_json(dev_server: DevInferenceHandle, client: aiohttp.ClientSession) -> None:
    async with client.post(f"{dev_server.url}/v1/completions", data=b"nope") as response:
        assert response.status == 400
