"""The rest of the Ollama surface and its refusals, on the real model."""

from __future__ import annotations

import math

import aiohttp
import pytest

from cynode.node.devinference import DevInferenceHandle
from tests.node.devinference.conftest import MODEL

pytestmark = pytest.mark.model


async def test_tags_lists_the_model(
    dev_server: DevInferenceHandle, client: aiohttp.ClientSession
) -> None:
    async with client.get(f"{dev_server.url}/api/tags") as response:
        body = await response.json()
    (model,) = body["models"]
    assert model["name"] == model["model"] == MODEL
    assert model["size"] > 50_000_000
    assert len(model["digest"]) == 64
    assert model["details"]["format"] == "gguf"
    assert model["details"]["quantization_level"] == "Q4_1"
    assert model["details"]["parameter_size"] == "135M"
    assert model["modified_at"].endswith("Z")


async def test_version_ps_root_and_show(
    dev_server: DevInferenceHandle, client: aiohttp.ClientSession
) -> None:
    async with client.get(f"{dev_server.url}/api/version") as response:
        assert (await response.json())["version"]
    async with client.get(f"{dev_server.url}/api/ps") as response:
        assert (await response.json())["models"][0]["name"] == MODEL
    async with client.get(f"{dev_server.url}/") as response:
        assert await response.text() == "Ollama is running"
    async with client.head(f"{dev_server.url}/") as response:
        assert response.status == 200
    async with client.post(f"{dev_server.url}/api/show", json={"name": MODEL}) as response:
        show = await response.json()
    assert "im_start" in show["template"]
    assert show["model_info"]["general.architecture"] == "llama"
    assert show["model_info"]["llama.context_length"] == 8192
    assert show["details"]["family"] == "llama"


async def test_embed_returns_unit_vectors(
    dev_server: DevInferenceHandle, client: aiohttp.ClientSession
) -> None:
    async with client.post(
        f"{dev_server.url}/api/embed",
        json={"model": MODEL, "input": ["the cat sat", "quantum chromodynamics"]},
    ) as response:
        assert response.status == 200
        body = await response.json()
    first, second = body["embeddings"]
    assert len(first) == len(second) == 576
    assert math.isclose(math.fsum(x * x for x in first), 1.0, rel_tol=1e-3)
    assert first != second
    assert body["prompt_eval_count"] > 0
    async with client.post(
        f"{dev_server.url}/api/embed", json={"model": MODEL, "input": "the cat sat"}
    ) as response:
        (single,) = (await response.json())["embeddings"]
    assert math.isclose(sum(a * b for a, b in zip(single, first, strict=True)), 1.0, rel_tol=1e-3)
    async with client.post(
        f"{dev_server.url}/api/embeddings", json={"model": MODEL, "prompt": "the cat sat"}
    ) as response:
        legacy = (await response.json())["embedding"]
    assert len(legacy) == 576
    async with client.post(
        f"{dev_server.url}/api/embeddings", json={"model": MODEL, "prompt": ""}
    ) as response:
        assert (await response.json())["embedding"] == []


async def test_empty_prompt_and_messages_only_load(
    dev_server: DevInferenceHandle, client: aiohttp.ClientSession
) -> None:
    async with client.post(f"{dev_server.url}/api/generate", json={"model": MODEL}) as response:
        body = await response.json()
    assert (body["done"], body["done_reason"], body["response"]) == (True, "load", "")
    async with client.post(
        f"{dev_server.url}/api/chat", json={"model": MODEL, "messages": []}
    ) as response:
        body = await response.json()
    assert body["done_reason"] == "load"


@pytest.mark.parametrize(
    ("path", "payload", "status", "fragment"),
    [
        ("/api/generate", {"prompt": "x"}, 400, "model is required"),
        ("/api/generate", {"model": "llama3", "prompt": "x"}, 404, "not found"),
        ("/api/chat", {"model": "gpt-4", "messages": []}, 404, "not found"),
        ("/api/show", {"model": "other"}, 404, "not found"),
        ("/api/generate", {"model": MODEL, "prompt": 5}, 400, "strings"),
        ("/api/generate", {"model": MODEL, "prompt": "x", "options": []}, 400, "object"),
        ("/api/generate", {"model": MODEL, "prompt": "x", "options": {"seed": "a"}}, 400, "opt"),
        ("/api/generate", {"model": MODEL, "prompt": "x", "options": {"stop": [1]}}, 400, "stop"),
        ("/api/chat", {"model": MODEL, "messages": "hi"}, 400, "list"),
        ("/api/chat", {"model": MODEL, "messages": ["hi"]}, 400, "object"),
        ("/api/chat", {"model": MODEL, "messages": [{"role": "x"}]}, 400, "role"),
        ("/api/embed", {"model": MODEL, "input": [1]}, 400, "input"),
        ("/api/embeddings", {"model": MODEL, "prompt": 1}, 400, "prompt"),
        ("/api/generate", [1, 2], 400, "object"),
    ],
)
async def test_refusals_are_ollama_errors(
    dev_server: DevInferenceHandle,
    client: aiohttp.ClientSession,
    path: str,
    payload: object,
    status: int,
    fragment: str,
) -> None:
    async with client.post(f"{dev_server.url}{path}", json=payload) as response:
        assert response.status == status
        assert fragment in (await response.json())["error"]


async def test_invalid_json_is_400(
    dev_server: DevInferenceHandle, client: aiohttp.ClientSession
) -> None:
    async with client.post(f"{dev_server.url}/api/generate", data=b"{nope") as response:
        assert response.status == 400
        assert "JSON" in (await response.json())["error"]


async def test_prompt_longer_than_context_is_400(
    dev_server: DevInferenceHandle, client: aiohttp.ClientSession
) -> None:
    prompt = "word " * 1100  # the fixture's context holds 1024 tokens, embeddings 512
    for stream in (True, False):
        async with client.post(
            f"{dev_server.url}/api/generate",
            json={"model": MODEL, "prompt": prompt, "raw": True, "stream": stream},
        ) as response:
            assert response.status == 400
            assert "context" in (await response.json())["error"]
    # Embeddings truncate by default, as Ollama's do, and refuse when told not to.
    async with client.post(
        f"{dev_server.url}/api/embed", json={"model": MODEL, "input": prompt}
    ) as response:
        assert response.status == 200
        assert len((await response.json())["embeddings"][0]) == 576
    async with client.post(
        f"{dev_server.url}/api/embed", json={"model": MODEL, "input": prompt, "truncate": False}
    ) as response:
        assert response.status == 400
