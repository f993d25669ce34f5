"""The guards: body cap, timeouts, allowlist, methods."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from cynode.proxy import FORBIDDEN_PATHS
from tests.proxy.conftest import (
    ProxyFactory,
    ScriptedUpstream,
    raw_exchange,
    read_response,
)


async def test_content_length_over_cap_refused_before_body(
    upstream: ScriptedUpstream, make_proxy: ProxyFactory
) -> None:
    proxy = await make_proxy(upstream.url)
    # 20 MiB announced, not one byte sent: the answer must come anyway.
    response = await raw_exchange(
        proxy.tcp_ports[0],
        b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Length: 20971520\r\n"
        b"Content-Type: application/json\r\n\r\n",
    )
    assert response.status == 413
    assert json.loads(response.body) == {"error": "request body too large"}
    assert upstream.seen == []


async def test_chunked_body_over_cap_is_413(
    upstream: ScriptedUpstream, make_proxy: ProxyFactory
) -> None:
    cap = 64 * 1024
    proxy = await make_proxy(upstream.url, max_body_bytes=cap)
    chunk = b"z" * 4096
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(20)) + b"0\r\n\r\n"
    response = await raw_exchange(
        proxy.tcp_ports[0],
        b"POST /api/chat HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body,
    )
    assert response.status == 413
    assert json.loads(response.body) == {"error": "request body too large"}
    # The upstream got a cut request, never the whole body.
    assert all(seen.body != chunk * 20 for seen in upstream.seen)


async def test_chunked_overflow_after_upstream_answered_cuts_stream(
    upstream: ScriptedUpstream, make_proxy: ProxyFactory
) -> None:
    cap = 16 * 1024
    proxy = await make_proxy(upstream.url, max_body_bytes=cap)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.tcp_ports[0])
    try:
        writer.write(
            b"POST /api/show HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n"
        )
        await writer.drain()
        # The upstream answers before reading the body; wait for its first line here.
        head = await asyncio.wait_for(reader.readuntil(b'{"early":true}\n\r\n'), 10)
        assert head.startswith(b"HTTP/1.1 200")
        big = b"q" * 8192
        try:
            for _ in range(8):
                writer.write(b"%x\r\n%s\r\n" % (len(big), big))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except ConnectionError:
            pass
        rest = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    # No terminating chunk and no "got" line: the client knows the answer is broken.
    assert b"0\r\n\r\n" not in rest
    assert b'"got"' not in rest


async def test_stalled_upstream_is_504(
    upstream: ScriptedUpstream, make_proxy: ProxyFactory
) -> None:
    proxy = await make_proxy(upstream.url, timeout=0.3)
    async with (
        aiohttp.ClientSession() as client,
        client.post(f"http://{proxy.addresses[0]}/api/embed", json={}) as response,
    ):
        assert response.status == 504
        assert await response.json() == {"error": "upstream timed out"}
    assert upstream.seen[0].path == "/api/embed"


async def test_silent_stream_is_cut_after_idle_timeout(
    upstream: ScriptedUpstream, make_proxy: ProxyFactory
) -> None:
    proxy = await make_proxy(upstream.url, timeout=5, idle_timeout=0.3)
    response = await raw_exchange(
        proxy.tcp_ports[0],
        b"POST /api/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
    )
    assert response.status == 200
    assert response.body == b'{"first":true}\n'
    assert not response.complete


@pytest.mark.parametrize("path", sorted(FORBIDDEN_PATHS))
async def test_model_management_is_403(
    path: str, upstream: ScriptedUpstream, make_proxy: ProxyFactory
) -> None:
    proxy = await make_proxy(upstream.url)
    async with aiohttp.ClientSession() as client:
        for method in ("POST", "DELETE", "GET"):
            async with client.request(
                method, f"http://{proxy.addresses[0]}{path}", json={"model": "m"}
            ) as response:
                assert response.status == 403
                assert "error" in await response.json()
    assert upstream.seen == []


@pytest.mark.parametrize(
    "path",
    [
        "/api/ps",
        "/metrics",
        "/api/%70ull",
        "/api/generate/../pull",
        "/api//generate",
        "/api/generate/",
        "//api/tags",
        "/API/TAGS",
    ],
)
async def test_unknown_or_disguised_paths_are_404(
    path: str, upstream: ScriptedUpstream, make_proxy: ProxyFactory
) -> None:
    proxy = await make_proxy(upstream.url)
    response = await raw_exchange(
        proxy.tcp_ports[0],
        f"GET {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode(),
    )
    assert response.status == 404
    assert json.loads(response.body) == {"error": "not found"}
    assert upstream.seen == []


async def test_wrong_method_is_405(upstream: ScriptedUpstream, make_proxy: ProxyFactory) -> None:
    proxy = await make_proxy(upstream.url)
    async with aiohttp.ClientSession() as client:
        async with client.get(f"http://{proxy.addresses[0]}/api/generate") as response:
            assert response.status == 405
            assert response.headers["Allow"] == "POST"
        async with client.post(f"http://{proxy.addresses[0]}/api/tags") as response:
            assert response.status == 405
            assert response.headers["Allow"] == "GET, HEAD"
    assert upstream.seen == []


async def test_expect_continue_is_answered(
    upstream: ScriptedUpstream, make_proxy: ProxyFactory
) -> None:
    proxy = await make_proxy(upstream.url)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.tcp_ports[0])
    try:
        writer.write(
            b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert interim.startswith(b"HTTP/1.1 100")
        writer.write(b"abcd")
        await writer.drain()
        response = await asyncio.wait_for(read_response(reader), 10)
    finally:
        writer.close()
    assert response.status == 200
    assert json.loads(response.body)["received"] == 4
    assert "expect" not in upstream.header_names()


async def test_requests_beyond_max_in_flight_wait_for_a_turn(
    upstream: ScriptedUpstream, make_proxy: ProxyFactory
) -> None:
    proxy = await make_proxy(upstream.url, max_in_flight=1)
    url = f"http://127.0.0.1:{proxy.tcp_ports[0]}"
    async with aiohttp.ClientSession() as session:
        # The first holds the only turn until its stream ends.
        first = await session.post(f"{url}/api/generate", data=b"{}")
        assert await first.content.readline() == b'{"response":"one","done":false}\n'
        second = asyncio.ensure_future(session.get(f"{url}/api/tags"))
        await asyncio.sleep(0.3)
        assert not second.done()
        assert [seen.path for seen in upstream.seen] == ["/api/generate"]
        # Health and refusals need no turn.
        async with session.get(f"{url}/healthz") as health:
            assert health.status == 200
        async with session.post(f"{url}/api/pull", data=b"{}") as pull:
            assert pull.status == 403
        upstream.release.set()
        assert (await first.read()).endswith(b'"done":true}\n')
        first.release()
        async with await second as tags:
            assert tags.status == 200
    assert [seen.path for seen in upstream.seen] == ["/api/generate", "/api/tags"]
