"""The routes Envoy passes to the gateway's REST port (deploy/envoy.yaml): the OpenAI
door (SPEC §10) and artifact downloads (§2.11, §2.12), which are no annotated RPCs for
the transcoder. A real Envoy in front of a real orchestrator (in this process), a
node's inference link and relay, and the development model; the official `openai` SDK
and plain HTTP with ranges as the clients."""

from __future__ import annotations

import asyncio
import io
import tarfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest

from cynode.testing.launchers import DevModel
from cynode.testing.waiting import until
from tests.contract.stack import Envoy, launch_envoy
from tests.orchestrator.gateway.test_artifacts_rest import finished
from tests.orchestrator.inference.chatkit import MODEL, Door, Tap, dev_model, running_door

__all__ = ["dev_model"]

pytestmark = pytest.mark.slow

FILES = {"report.txt": b"the report\n", "data/part-1.csv": b"a,b\n1,2\n" * 100_000}


async def _envoy_for(door: Door) -> Envoy:
    cp = door.orchestrator.control_ports
    assert cp is not None
    # Blocking start in a thread: Envoy's health checks are answered by this event loop.
    return await asyncio.to_thread(
        launch_envoy,
        door.base,
        door.grpc_target,
        f"127.0.0.1:{cp.grpc_port}",
        door.url,
    )


@pytest.fixture
async def tap(dev_model: DevModel) -> AsyncIterator[Tap]:
    tap = await Tap(dev_model.url).start()
    yield tap
    await tap.close()


@pytest.fixture
async def through(
    tap: Tap, dev_model: DevModel, tmp_path: Path
) -> AsyncIterator[tuple[Door, Envoy]]:
    async with running_door(dev_model, tmp_path) as door:
        await door.add_node(upstream=tap.url)
        envoy = await _envoy_for(door)
        try:
            yield door, envoy
        finally:
            await asyncio.to_thread(envoy.proc.stop)


async def test_the_sdk_streams_a_chat_through_envoy_as_the_model_writes(
    through: tuple[Door, Envoy], tap: Tap
) -> None:
    door, envoy = through
    key = await door.token()
    client = openai.AsyncOpenAI(base_url=f"{envoy.url}/v1", api_key=key, max_retries=0, timeout=120)
    models = await client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Count from one to twenty in words."}],
        max_tokens=40,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces: list[str] = []
    first_at = 0.0
    usage = None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
            continue
        if chunk.choices[0].delta.content:
            first_at = first_at or time.perf_counter()
            pieces.append(chunk.choices[0].delta.content)
    assert len(pieces) > 3, pieces
    assert usage is not None and usage.completion_tokens == len(pieces)
    # Not buffered by Envoy: the first piece was here before the model had finished.
    assert tap.done_at and first_at < tap.done_at[-1]
    embedded = await client.embeddings.create(model=MODEL, input=["a cat", "a dog"])
    assert [d.index for d in embedded.data] == [0, 1] and len(embedded.data[0].embedding) > 100
    # The usage report is the door's too (not transcoded), in its own shape. Its rows are
    # written after the answers, in the background (SPEC §10.6).
    async with httpx.AsyncClient(base_url=envoy.url, timeout=30) as http:

        async def both_recorded() -> bool:
            report = await http.get(
                "/v1/inference/usage", headers={"authorization": f"Bearer {key}"}
            )
            assert report.status_code == 200, report.text
            rows = {row["model"]: row for row in report.json()["data"]}
            return MODEL in rows and rows[MODEL]["requests"] == 2  # the chat, the embeddings

        await until(both_recorded, timeout=10, what="the chat's and the embeddings' usage")


async def test_the_doors_errors_and_body_cap_keep_the_openai_shape_through_envoy(
    through: tuple[Door, Envoy],
) -> None:
    door, envoy = through
    bad = openai.AsyncOpenAI(base_url=f"{envoy.url}/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await bad.models.list()
    key = await door.token()
    async with httpx.AsyncClient(base_url=envoy.url, timeout=60) as http:
        auth = {"authorization": f"Bearer {key}"}
        content = "x" * (10 * 1024 * 1024)
        big = await http.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": content}]},
            headers=auth,
        )
        unknown = await http.post(
            "/v1/chat/completions",
            json={"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]},
            headers=auth,
        )
    assert big.status_code == 413
    # Refused by Envoy's cap (a local reply: the upstream never answered it)...
    assert "x-envoy-upstream-service-time" not in big.headers
    # ...in the door's own shape.
    assert big.headers["content-type"].startswith("application/json")
    assert big.json()["error"]["type"] == "invalid_request_error"
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"


async def test_an_artifact_downloads_through_envoy_with_ranges_and_the_tar(
    through: tuple[Door, Envoy],
) -> None:
    door, envoy = through
    gateway = door.orchestrator.gateway
    async with (
        httpx.AsyncClient(base_url=door.url, timeout=30) as direct,
        httpx.AsyncClient(base_url=envoy.url, timeout=30) as http,
    ):
        login = await door.login()
        auth = {"authorization": f"Bearer {login['access_token']}"}
        task_id, arts = await finished(direct, gateway, auth, FILES, name="via-envoy")
        csv = arts["data/part-1.csv"]
        data = FILES["data/part-1.csv"]
        url = f"/v1/tasks/{task_id}/artifacts/{csv.artifact_id}"
        whole = await http.get(url, headers=auth)
        part = await http.get(url, headers={**auth, "Range": "bytes=100000-100009"})
        tail = await http.get(url, headers={**auth, "Range": "bytes=-5"})
        head = await http.head(url, headers=auth)
        archive = await http.get("/v1/tasks/via-envoy/artifacts.tar", headers=auth)
        listed = await http.get(f"/v1/tasks/{task_id}/artifacts", headers=auth)  # transcoded
        stranger = await http.get(url)
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["etag"] == f'"{csv.sha256}"'
    assert part.status_code == 206 and part.content == data[100000:100010]
    assert part.headers["content-range"] == f"bytes 100000-100009/{len(data)}"
    assert tail.status_code == 206 and tail.content == data[-5:]
    assert head.status_code == 200 and head.headers["content-length"] == str(len(data))
    assert archive.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(archive.content)) as tar:
        assert {m.name for m in tar.getmembers()} == set(FILES)
    assert listed.status_code == 200 and listed.json()["complete"] is True
    assert stranger.status_code == 401
    assert stranger.headers["content-type"].startswith("application/problem+json")
