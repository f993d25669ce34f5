"""The OpenAI door across two replicas on one Postgres, in this process (see chatkit
for the real parts): a node's link on replica A, the official SDK against replica B.
B lists A's models and relays A's answers; the user's limit is counted where the link
is; usage is recorded once; a node lost mid-answer on A ends B's stream with an error."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import grpc
import httpx
import openai
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cynode.gateway.v1 import inference_pb2, inference_pb2_grpc
from cynode.inference.v1 import chat_pb2
from cynode.orchestrator.auth.users import update_user
from cynode.orchestrator.store import make_engine, upgrade
from cynode.testing.launchers import DevModel
from cynode.testing.postgres import PgSchema
from cynode.testing.waiting import until
from tests.orchestrator.inference.chatkit import MODEL, Door, Tap, dev_model, running_door

__all__ = ["dev_model"]

pytestmark = pytest.mark.slow


@pytest.fixture
async def pg() -> AsyncIterator[AsyncEngine]:
    schema = PgSchema.create("cyn_repl")
    engine = make_engine(schema.url)
    await upgrade(engine)
    yield engine
    await engine.dispose()
    schema.drop()


@contextlib.asynccontextmanager
async def two_replicas(
    model: DevModel, tmp: Path, engine: AsyncEngine
) -> AsyncIterator[tuple[Door, Door]]:
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
    async with (
        running_door(model, tmp / "a", engine) as a,
        running_door(model, tmp / "b", engine) as b,
    ):
        yield a, b


def client(door: Door, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{door.url}/v1", api_key=key, max_retries=0, timeout=120)


async def listed(door: Door, key: str) -> list[str]:
    return [m.id async for m in client(door, key).models.list()]


async def test_replica_b_serves_the_link_replica_a_holds(
    dev_model: DevModel, tmp_path: Path, pg: AsyncEngine
) -> None:
    async with two_replicas(dev_model, tmp_path, pg) as (a, b):
        key = await b.token()
        ai = client(b, key)
        with pytest.raises(openai.APIStatusError) as none:
            await ai.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=2
            )
        assert none.value.status_code == 503  # no node anywhere yet

        await a.add_node()
        await until(lambda: _has(b, key), timeout=15, what="B lists A's model")
        assert await listed(b, key) == [MODEL]

        stream = await ai.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Count to five."}],
            max_tokens=16,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        pieces, usage = [], None
        async for chunk in stream:
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
            if chunk.usage is not None:
                usage = chunk.usage
        assert "".join(pieces).strip()
        assert usage is not None and usage.completion_tokens > 0

        embedded = await ai.embeddings.create(model=MODEL, input=["hello", "world"])
        assert len(embedded.data) == 2 and len(embedded.data[0].embedding) > 10

        # gRPC clients of B are forwarded the same way.
        async with grpc.aio.insecure_channel(b.grpc_target) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)  # type: ignore[no-untyped-call]
            meta = (("authorization", f"Bearer {key}"),)
            listing = await stub.ListModels(inference_pb2.ListModelsRequest(), metadata=meta)
            assert [(m.id, m.nodes) for m in listing.models] == [(MODEL, 1)]
            request = inference_pb2.ChatCompletionRequest(
                chat=chat_pb2.ChatRequest(
                    model=MODEL,
                    messages=[chat_pb2.ChatMessage(role="user", content="Hi")],
                    options=chat_pb2.SamplingOptions(max_tokens=4),
                )
            )
            chunks = [r.chunk async for r in stub.ChatCompletion(request, metadata=meta)]
            assert chunks[-1].finish_reason in ("stop", "length")

        with pytest.raises(openai.NotFoundError):
            await ai.chat.completions.create(
                model="no-such-model", messages=[{"role": "user", "content": "Hi"}]
            )

        # Usage is recorded once, by the replica whose link answered (in the background).
        async def used() -> list[tuple[str, int]]:
            async with httpx.AsyncClient(base_url=b.url, headers=_auth(key)) as http:
                report = (await http.get("/v1/inference/usage")).json()
            return [(r["model"], r["requests"]) for r in report["data"]]

        await until(lambda: _equal(used(), [(MODEL, 3)]), timeout=10, what="usage recorded")
        await asyncio.sleep(0.5)
        assert await used() == [(MODEL, 3)]

        # The node goes: B stops listing it once A withdrew its row.
        await a.nodes[0].link.stop()
        await a.nodes[0].kill()
        a.nodes.clear()
        await until(lambda: _empty(b, key), timeout=15, what="B drops A's model")


async def test_the_user_limit_is_counted_where_the_link_is(
    dev_model: DevModel, tmp_path: Path, pg: AsyncEngine
) -> None:
    tap = await Tap(dev_model.url).start()
    try:
        async with two_replicas(dev_model, tmp_path, pg) as (a, b):
            await a.add_node(upstream=tap.url, concurrency=4)
            login = await b.login()
            gw = b.orchestrator.gateway
            # The user's own quota, as PATCH /v1/users/{id} sets it (SPEC §3.9).
            await update_user(gw.factory, login["handle"], quotas={"max_inference_requests": 1})
            key = str(login["access_token"])
            await until(lambda: _has(b, key), timeout=15, what="B lists A's model")
            async with httpx.AsyncClient(base_url=b.url, headers=_auth(key)) as http:
                me = await http.get("/v1/users/me")
            assert me.json()["limits"]["max_inference_requests"] == 1
            tap.open.clear()
            held = asyncio.create_task(
                client(b, key).chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=2
                )
            )
            await until(lambda: tap.held == 1, timeout=30)
            # The request that came through B counts on A: A refuses the user's next one.
            for door in (a, b):
                with pytest.raises(openai.RateLimitError):
                    await client(door, key).chat.completions.create(
                        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=2
                    )
            tap.open.set()
            assert (await asyncio.wait_for(held, 60)).choices
    finally:
        await tap.close()


async def _has(door: Door, key: str) -> bool:
    return MODEL in await listed(door, key)


async def _empty(door: Door, key: str) -> bool:
    return await listed(door, key) == []


async def _equal(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_a_node_lost_mid_answer_on_a_ends_bs_stream_with_an_error(
    dev_model: DevModel, tmp_path: Path, pg: AsyncEngine
) -> None:
    async with two_replicas(dev_model, tmp_path, pg) as (a, b):
        node = await a.add_node()
        key = await b.token()
        await until(lambda: _has(b, key), timeout=15, what="B lists A's model")
        stream = await client(b, key).chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Write a long story about the sea."}],
            max_tokens=2000,
            stream=True,
        )
        pieces = stream.__aiter__()
        assert (await asyncio.wait_for(anext(pieces), 60)).choices
        await node.kill()
        with pytest.raises(openai.APIError, match="went away"):
            async with asyncio.timeout(10):
                async for _chunk in pieces:
                    pass
