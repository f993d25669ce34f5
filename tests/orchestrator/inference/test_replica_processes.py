"""Two `cynode-orchestrator serve` processes on one Postgres schema (SPEC §3.7, §10.3):
a node's inference link on replica A (its real InferenceLink client and relay in this
process, the development model behind them), the official openai SDK against replica
B: the models, a streamed chat and embeddings all come from A's link through B. A is
then killed (SIGKILL) in the middle of a stream: B's client gets an error event within
seconds, not a hang, and B stops listing the model once A's rows expire."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path

import grpc
import httpx
import openai
import pytest

from cynode.controlplane.v1 import nodes_pb2
from cynode.node.backoff import Backoff
from cynode.node.inference.link import InferenceLink
from cynode.node.inference.relay import InferenceRelay
from cynode.testing.launchers import DevModel, Orchestrator
from cynode.testing.postgres import PgSchema
from cynode.testing.waiting import until
from tests.orchestrator.inference.chatkit import MODEL, PSK, NodeAuth, dev_model

__all__ = ["dev_model"]

pytestmark = pytest.mark.slow

ADMIN_PASSWORD = "replica-admin-pw-1"


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[tuple[Orchestrator, Orchestrator]]:
    schema = PgSchema.create("cyn_reprocs")
    shared = {"CYNODE_JWT_SECRET": secrets.token_hex(32), "CYNODE_REQUIRE_INFERENCE": "false"}
    made = [
        Orchestrator(
            tmp_path / name,
            ADMIN_PASSWORD,
            PSK,
            database_url=schema.url,
            settings=shared,
            name=f"orchestrator-{name}",
        )
        for name in ("a", "b")
    ]
    try:
        for orch in made:  # one after the other: the first one migrates the schema
            orch.start()
        yield made[0], made[1]
    finally:
        for orch in made:
            if orch.alive():
                orch.stop()
        schema.drop()


def login(orch: Orchestrator) -> str:
    response = httpx.post(
        f"{orch.gateway_url}/v1/auth/login",
        json={"handle": "admin", "password": ADMIN_PASSWORD},
        timeout=10,
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


async def test_replica_b_relays_replica_a_and_survives_its_death(
    dev_model: DevModel, tmp_path: Path, replicas: tuple[Orchestrator, Orchestrator]
) -> None:
    a, b = replicas
    relay = InferenceRelay(tmp_path / "relay", dev_model.url)
    (tmp_path / "relay").mkdir()
    await relay.start()
    channel = grpc.aio.insecure_channel(a.control_grpc)
    caps = nodes_pb2.InferenceCapability(
        supported=True, running=True, models=[MODEL], max_concurrency=2
    )
    link = InferenceLink(
        node_slug="replica-node",
        channel=channel,
        auth=NodeAuth(channel, "replica-node"),
        relay=lambda: relay,
        capability=lambda: caps,
        allowed_models=lambda: (),
        backoff=Backoff(0.1, 0.5),
    )
    running = asyncio.create_task(link.run())
    try:
        await asyncio.wait_for(link.connected.wait(), 30)
        key = await asyncio.to_thread(login, b)
        ai = openai.AsyncOpenAI(
            base_url=f"{b.gateway_url}/v1", api_key=key, max_retries=0, timeout=120
        )

        async def listed() -> list[str]:
            return [m.id async for m in ai.models.list()]

        await until(lambda: _is(listed(), [MODEL]), timeout=20, what="B lists A's model")

        stream = await ai.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Name three colours."}],
            max_tokens=12,
            temperature=0,
            stream=True,
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text.strip()
        embedded = await ai.embeddings.create(model=MODEL, input="hello")
        assert len(embedded.data[0].embedding) > 10

        # A long answer; A dies once it has begun.
        long = await ai.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Write a long story about the sea."}],
            max_tokens=2000,
            stream=True,
        )
        pieces = long.__aiter__()
        first = await asyncio.wait_for(anext(pieces), 60)
        assert first.choices
        a.kill9()
        killed = time.monotonic()
        with pytest.raises(openai.APIError) as ended:
            async with asyncio.timeout(15):
                async for _chunk in pieces:
                    pass
        assert time.monotonic() - killed < 10, "the stream did not end within seconds"
        assert "went away" in str(ended.value) or "node" in str(ended.value).lower()

        # With A's link gone, B soon lists nothing and answers 503, never hangs.
        await until(lambda: _is(listed(), []), timeout=30, what="A's rows expire on B")
        with pytest.raises(openai.APIStatusError) as none:
            await ai.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=2
            )
        assert none.value.status_code == 503
    finally:
        await link.stop()
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await channel.close(None)
        await relay.close()


async def _is(value: Awaitable[object], expected: object) -> bool:
    return await value == expected
