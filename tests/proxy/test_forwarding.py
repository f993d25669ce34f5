"""Forwarding and streaming through a real proxy to a scripted upstream."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest

from cynode.testing import free_port
from tests.proxy.conftest import ProxyFactory, ScriptedUpstream


async def test_ndjson_first_chunk_arrives_before_upstream_finishes(
    upstream: ScriptedUpstream, make_proxy: ProxyFactory
) -> None:
    proxy = await make_proxy(upstream.url)
    async with (
        aiohttp.ClientSession() as client,
        client.post(
            f"http://{proxy.addresses[0]}/api/generate", json={"model": "m", "prompt": "hi"}
        ) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/x-ndjson"
        # The upstream holds its second line until this first one has been seen here.
        first = await asyncio.wait_for(response.content.readline(), 10)
        assert json.loads(first) == {"response": "one", "done": False}
        assert not upstream.release.is_set()
        upstream.release.set()
        rest = await asyncio.wait_for(response.content.read(), 10)
    assert json.loads(rest) == {"response": "two", "done": True}
    assert json.loads(upstream.seen[0].body or b"") == {"model": "m", "prompt": "hi"}


async def test_sse_streams_with_content_type(
    upstream: ScriptedUpstream, make_proxy: ProxyFactory
) -> None:
    proxy = await make_proxy(upstream.url)
    async with (
        aiohttp.ClientSession() as client,
        client.post(f"http://{proxy.addresses[0]}/v1/chat/completions", json={}) as response,
    ):
        assert response.headers["Content-Type"] == "text/event-stream"
        first = await asyncio.wait_for(response.content.readline(), 10)
        assert first == b'data: {"n":1}\n'
        assert await asyncio.wait_for(response.content.readline(), 10) == b"\n"
        upstream.release.set()
        assert await asyncio.wait_for(response.content.read(), 10) == b"data: [DONE]\n\n"


async def test_body_with_length_forwarded_as_declared(
    upstream: ScriptedUpstream, make_proxy: ProxyFactory
) -> None:
    proxy = await make_proxy(upstream.url)
    body = b"x" * 300_000
    async with (
        aiohttp.ClientSession() as client,
        client.post(
            f"http://{proxy.addresses[0]}/api/chat?keep=1", data=body, headers={"X-Mine": "1"}
        ) as response,
    ):
        assert response.status == 200
        assert (await response.json())["received"] == len(body)
        assert response.headers["X-Kept"] == "yes"
    seen = upstream.seen[0]
    assert seen.path == "/api/chat?keep=1"
    assert seen.body == body
    headers = {k.lower(): v for k, v in seen.headers}
    assert headers["content-length"] == str(len(body))
    assert "transfer-encoding" not in headers
    assert headers["x-mine"] == "1"


async def test_chunked_body_under_cap_forwarded_whole(
    upstream: ScriptedUpstream, make_proxy: ProxyFactory
) -> None:
    proxy = await make_proxy(upstream.url, max_body_bytes=64 * 1024)

    async def parts() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"y" * 1000

    async with (
        aiohttp.ClientSession() as client,
        client.post(f"http://{proxy.addresses[0]}/api/chat", data=parts()) as response,
    ):
        assert response.status == 200
        assert (await response.json())["received"] == 10_000
    assert upstream.seen[0].body == b"y" * 10_000


async def test_get_and_head_on_root(upstream: ScriptedUpstream, make_proxy: ProxyFactory) -> None:
    proxy = await make_proxy(upstream.url)
    async with aiohttp.ClientSession() as client:
        async with client.get(f"http://{proxy.addresses[0]}/") as response:
            assert await response.text() == "Ollama is running"
        async with client.head(f"http://{proxy.addresses[0]}/") as response:
            assert response.status == 200
    assert [s.method for s in upstream.seen] == ["GET", "HEAD"]


async def test_upstream_down_is_502(make_proxy: ProxyFactory) -> None:
    proxy = await make_proxy(f"http://127.0.0.1:{free_port()}")
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"http://{proxy.addresses[0]}/api/tags") as response,
    ):
        assert response.status == 502
        assert await response.json() == {"error": "upstream unavailable"}


async def test_healthz_does_not_touch_upstream(
    upstream: ScriptedUpstream, make_proxy: ProxyFactory
) -> None:
    proxy = await make_proxy(f"http://127.0.0.1:{free_port()}")
    async with aiohttp.ClientSession() as client:
        async with client.get(f"http://{proxy.addresses[0]}/healthz") as response:
            assert response.status == 200
            assert await response.text() == "ok"
        async with client.post(f"http://{proxy.addresses[0]}/healthz") as response:
            assert response.status == 405
    assert upstream.seen == []


async def test_access_log_has_no_headers_or_query(
    upstream: ScriptedUpstream, make_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = await make_proxy(upstream.url)
    caplog.set_level(logging.INFO, logger="cynode.proxy")
    async with (
        aiohttp.ClientSession() as client,
        client.post(
            f"http://{proxy.addresses[0]}/api/chat?token=query-secret",
            data=b"abc",
            headers={"Authorization": "Bearer header-secret"},
        ) as response,
    ):
        body = await response.read()
    lines = [r.getMessage() for r in caplog.records if r.name == "cynode.proxy.access"]
    assert any(line.startswith(f"POST /api/chat 200 {len(body)} ") for line in lines), lines
    everything = "\n".join(r.getMessage() for r in caplog.records)
    assert "header-secret" not in everything
    assert "query-secret" not in everything


async def test_client_leaving_mid_stream_releases_upstream(
    upstream: ScriptedUpstream, make_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cynode.proxy")
    proxy = await make_proxy(upstream.url)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.tcp_ports[0])
    writer.write(b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
    await writer.drain()
    await asyncio.wait_for(reader.readuntil(b'"done":false}\n'), 10)
    writer.close()
    await writer.wait_closed()
    upstream.release.set()  # the proxy now writes into a closed connection

    def logged() -> bool:
        return any(
            r.getMessage().startswith("POST /api/generate 200")
            for r in caplog.records
            if r.name == "cynode.proxy.access"
        )

    for _ in range(200):
        if logged():
            break
        await asyncio.sleep(0.025)
    assert logged()


async def test_running_proxy_as_context_manager(
    upstream: ScriptedUpstream, make_proxy: ProxyFactory
) -> None:
    async with await make_proxy(upstream.url) as proxy:
        port = proxy.tcp_ports[0]
        async with (
            aiohttp.ClientSession() as client,
            client.get(f"http://127.0.0.1:{port}/api/version") as response,
        ):
            assert response.status == 404  # the scripted upstream has no such route
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
