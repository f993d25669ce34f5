"""Server streaming over REST: NDJSON, flushed per message, errors in band."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from cynode.orchestrator.rest import build_rest_app
from tests.orchestrator.rest.echo import SECRET, SERVICE_NAME, EchoServicer
from tests.orchestrator.rest.test_unary import assert_problem


def lines(response: httpx.Response) -> list[dict[str, object]]:
    return [json.loads(line) for line in response.text.splitlines()]


async def test_stream_is_ndjson(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/shelves/s/things:stream?count=3")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.text.endswith("\n")
    got = lines(response)
    assert [item["thing"]["thing_id"] for item in got] == ["0", "1", "2"]  # type: ignore[index]
    assert got[0]["thing"]["name"] == "s"  # type: ignore[index]


async def test_empty_stream_is_an_empty_200(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/shelves/s/things:stream")
    assert response.status_code == 200
    assert response.content == b""


async def test_abort_mid_stream_is_a_final_error_line(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/shelves/abort-late/things:stream?count=2")
    assert response.status_code == 200
    got = lines(response)
    assert len(got) == 3
    assert got[-1] == {
        "error": {
            "type": "urn:cynode:problem:unavailable",
            "title": "Service unavailable",
            "status": 503,
            "detail": "node went away",
        }
    }


async def test_crash_mid_stream_does_not_leak(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/shelves/crash-late/things:stream?count=1")
    got = lines(response)
    assert got[-1]["error"]["status"] == 500  # type: ignore[index]
    assert got[-1]["error"]["detail"] == "internal error"  # type: ignore[index]
    assert SECRET not in response.text


async def test_abort_before_first_message_is_a_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/shelves/early/things:stream?count=2")
    assert_problem(response, 403, "permission-denied")


async def test_crash_before_first_message_is_a_500_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/shelves/crash-early/things:stream?count=2")
    body = assert_problem(response, 500, "internal")
    assert SECRET not in str(body)


async def test_bad_query_on_stream_is_400(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v1/shelves/s/things:stream?count=x"), 400, "invalid-argument")


@pytest.fixture
async def live_url(app: Starlette) -> AsyncIterator[str]:
    """The shim behind a real uvicorn, to see bytes as a client sees them."""
    # A socket already listening: clients queue in its backlog until uvicorn accepts.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task
    sock.close()


async def test_messages_are_flushed_as_produced(live_url: str, echo: EchoServicer) -> None:
    async with (
        httpx.AsyncClient(base_url=live_url) as http,
        http.stream("GET", "/v1/shelves/wait/things:stream?count=2") as response,
    ):
        received = response.aiter_lines()
        first = await asyncio.wait_for(received.__anext__(), 10)
        # The servicer is still blocked: the first line came before the second existed.
        assert json.loads(first)["thing"]["thing_id"] == "0"
        echo.release.set()
        rest = [line async for line in received]
    assert [json.loads(line)["thing"]["thing_id"] for line in rest] == ["1"]


async def test_client_disconnect_cancels_the_servicer(live_url: str, echo: EchoServicer) -> None:
    async with (
        httpx.AsyncClient(base_url=live_url) as http,
        http.stream("GET", "/v1/shelves/wait/things:stream?count=2") as response,
    ):
        await asyncio.wait_for(response.aiter_lines().__anext__(), 10)
    await asyncio.wait_for(echo.stream_cancelled.wait(), 10)


async def test_disconnect_before_the_first_message_cancels_too(
    live_url: str, echo: EchoServicer
) -> None:
    async with httpx.AsyncClient(base_url=live_url) as http:
        request = asyncio.create_task(http.get("/v1/shelves/wait-first/things:stream?count=1"))
        await asyncio.wait_for(echo.stream_started.wait(), 10)
        request.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await request
    await asyncio.wait_for(echo.stream_cancelled.wait(), 10)


async def test_chunked_upload_over_the_cap_on_a_real_server(live_url: str) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b" " * 100

    async with httpx.AsyncClient(base_url=live_url) as http:
        response = await http.post("/v1/fail", content=chunks())
    assert_problem(response, 413, "payload-too-large")


def test_build_with_the_default_cap(echo: EchoServicer) -> None:
    app = build_rest_app({SERVICE_NAME: echo})
    assert len(app.state.rest_bindings) == 6
