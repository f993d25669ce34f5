"""Per-user token usage (recorded, readable by the user and by admins), the metrics, and
InferenceService for gRPC clients, on the real path (see chatkit)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import openai
import pytest

from cynode.gateway.v1 import inference_pb2, inference_pb2_grpc
from cynode.inference.v1 import chat_pb2
from cynode.testing.launchers import DevModel
from cynode.testing.waiting import until
from tests.orchestrator.inference.chatkit import MODEL, Door, dev_model, running_door

__all__ = ["dev_model"]

pytestmark = pytest.mark.slow


@pytest.fixture
async def door(dev_model: DevModel, tmp_path: Path) -> AsyncIterator[Door]:
    async with running_door(dev_model, tmp_path) as door:
        await door.add_node()
        yield door


async def usage(door: Door, token: str, user: str = "") -> httpx.Response:
    async with httpx.AsyncClient(base_url=door.url) as http:
        return await http.get(
            "/v1/inference/usage",
            params={"user": user} if user else {},
            headers={"authorization": f"Bearer {token}"},
        )


async def test_usage_is_recorded_per_user_and_model_and_readable(door: Door) -> None:
    token = await door.token()
    ai = openai.AsyncOpenAI(base_url=f"{door.url}/v1", api_key=token, max_retries=0)
    one = await ai.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    two = await ai.embeddings.create(model=MODEL, input="a cat")
    assert one.usage is not None

    async def both_recorded() -> bool:
        body = (await usage(door, token)).json()
        return bool(body["data"]) and body["data"][0]["requests"] == 2

    await until(both_recorded, timeout=10)
    [row] = (await usage(door, token)).json()["data"]
    assert row["model"] == MODEL
    assert row["prompt_tokens"] == one.usage.prompt_tokens + two.usage.prompt_tokens
    assert row["completion_tokens"] == one.usage.completion_tokens
    handle = (await usage(door, token)).json()["user"]

    other = await door.token()
    assert (await usage(door, other)).json()["data"] == []
    refused = await usage(door, other, handle)
    assert refused.status_code == 403 and refused.json()["error"]["type"] == "permission_error"
    admin = await door.token(is_admin=True)
    seen = (await usage(door, admin, handle)).json()
    assert seen["user"] == handle and seen["data"] == [row]
    assert (await usage(door, admin, "nobody-here")).status_code == 404
    assert (await usage(door, "bad-token")).status_code == 401

    async with httpx.AsyncClient(base_url=door.url) as http:
        metrics = (await http.get("/metrics")).text
    assert f'cynode_inference_requests_total{{kind="chat",model="{MODEL}",outcome="ok"}}' in metrics
    assert "cynode_inference_time_to_first_token_seconds_count" in metrics
    assert "cynode_inference_queue_wait_seconds_count" in metrics
    assert f'cynode_inference_tokens_total{{direction="completion",model="{MODEL}"}}' in metrics


async def test_inference_service_over_grpc(door: Door) -> None:
    token = await door.token()
    meta = (("authorization", f"Bearer {token}"),)
    async with grpc.aio.insecure_channel(door.grpc_target) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        models = await stub.ListModels(inference_pb2.ListModelsRequest(), metadata=meta)
        assert [(m.id, m.nodes) for m in models.models] == [(MODEL, 1)]
        chat = chat_pb2.ChatRequest(model=MODEL)
        chat.messages.add(role="user", content="Hi")
        chat.options.max_tokens = 5
        chunks = [
            r.chunk
            async for r in stub.ChatCompletion(
                inference_pb2.ChatCompletionRequest(chat=chat), metadata=meta
            )
        ]
        assert len(chunks) > 1 and chunks[-1].finish_reason == "length"
        assert chunks[-1].usage.completion_tokens == 5
        vectors = await stub.CreateEmbeddings(
            inference_pb2.CreateEmbeddingsRequest(
                embeddings=chat_pb2.EmbeddingsRequest(model=MODEL, input=["a", "b"])
            ),
            metadata=meta,
        )
        assert len(vectors.result.data) == 2 and vectors.result.usage.prompt_tokens > 0
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListModels(inference_pb2.ListModelsRequest())
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        chat.model = "nope:1b"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stub.ChatCompletion(
                inference_pb2.ChatCompletionRequest(chat=chat), metadata=meta
            ):
                pass
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
