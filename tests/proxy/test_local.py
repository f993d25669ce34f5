"""A call through a running proxy from its own process (`RunningProxy.call`): the same
guards as a request on its listeners, against the real scripted upstream."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from tests.proxy.conftest import ProxyFactory, ScriptedUpstream


async def test_a_streamed_answer_comes_piece_by_piece_before_its_end(
    upstream: ScriptedUpstream, make_proxy: ProxyFactory
) -> None:
    proxy = await make_proxy(upstream.url)
    pieces: list[bytes] = []
    first = asyncio.Event()

    async def take(data: bytes) -> None:
        pieces.append(data)
        first.set()

    async with proxy.call("POST", "/api/generate", b'{"model":"m"}') as answer:
        assert answer.status == 200
        assert ("Content-Type", "application/x-ndjson") in answer.headers
        streaming = asyncio.create_task(answer.stream(take))
        # The first line is handed over while the upstream still holds the second.
        await asyncio.wait_for(first.wait(), 5)
        assert b"".join(pieces) == b'{"response":"one","done":false}\n'
        upstream.release.set()
        await streaming
        with pytest.raises(RuntimeError):
            await answer.stream(take)
    assert b"".join(pieces).endswith(b'{"response":"two","done":true}\n')
    assert answer.complete
    assert upstream.seen[-1].body == b'{"model":"m"}'


async def test_credentials_and_hop_by_hop_headers_stay_behind_both_ways(
    upstream: ScriptedUpstream, make_proxy: ProxyFactory
) -> None:
    proxy = await make_proxy(upstream.url)
    sent = [("Authorization", "Bearer x"), ("Cookie", "c=1"), ("X-Mine", "1"), ("TE", "t")]
    async with proxy.call("POST", "/api/chat", b"{}", sent) as answer:
        body = json.loads(await answer.read())
    assert body["received"] == 2
    names = upstream.header_names()
    assert "x-mine" in names and not names & {"authorization", "cookie", "te"}
    returned = {name.lower() for name, _ in answer.headers}
    assert "x-kept" in returned and "set-cookie" not in returned


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("POST", "/api/pull", 403, None),
        ("POST", "/api/generate/../pull", 404, None),
        ("GET", "/api/chat", 405, "POST"),
    ],
)
async def test_what_the_policy_refuses_never_reaches_the_upstream(
    upstream: ScriptedUpstream,
    make_proxy: ProxyFactory,
    method: str,
    path: str,
    status: int,
    allow: str | None,
) -> None:
    proxy = await make_proxy(upstream.url)
    async with proxy.call(method, path) as answer:
        assert answer.status == status
        assert dict(answer.headers).get("Allow") == allow
        assert "error" in json.loads(await answer.read())
    assert upstream.seen == []


async def test_a_body_over_the_cap_is_413_before_anything_is_sent(
    upstream: ScriptedUpstream, make_proxy: ProxyFactory
) -> None:
    proxy = await make_proxy(upstream.url, max_body_bytes=10)
    async with proxy.call("POST", "/api/chat", b"x" * 11) as answer:
        assert answer.status == 413
    assert upstream.seen == []


async def test_a_stalled_upstream_is_504_within_the_shorter_timeout(
    upstream: ScriptedUpstream, make_proxy: ProxyFactory
) -> None:
    proxy = await make_proxy(upstream.url, timeout=30.0)
    started = asyncio.get_running_loop().time()
    async with proxy.call("POST", "/api/embed", b"{}", head_timeout=0.3) as answer:
        assert answer.status == 504
    assert asyncio.get_running_loop().time() - started < 5


async def test_a_silent_stream_is_cut_after_the_idle_timeout(
    upstream: ScriptedUpstream, make_proxy: ProxyFactory
) -> None:
    proxy = await make_proxy(upstream.url, timeout=5.0, idle_timeout=0.3)
    got: list[bytes] = []

    async def take(data: bytes) -> None:
        got.append(data)

    async with proxy.call("POST", "/api/embeddings", b"{}") as answer:
        with pytest.raises(TimeoutError):
            await answer.stream(take)
    assert b"".join(got) == b'{"first":true}\n' and not answer.complete


async def test_an_upstream_out_of_reach_is_502(
    tmp_path: Path, make_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = await make_proxy(f"unix:{tmp_path / 'nobody.sock'}")
    with caplog.at_level(logging.INFO, logger="cynode.proxy"):
        async with proxy.call("POST", "/api/chat", b"{}") as answer:
            assert answer.status == 502
            assert json.loads(await answer.read()) == {"error": "upstream unavailable"}
    # One access line, as for a request on a listener.
    assert any("POST /api/chat 502" in r.getMessage() for r in caplog.records)


async def test_calls_reuse_the_kept_alive_upstream_connection(
    upstream: ScriptedUpstream, make_proxy: ProxyFactory
) -> None:
    proxy = await make_proxy(f"unix:{upstream.unix_path}")
    for _ in range(3):
        async with proxy.call("GET", "/") as answer:
            assert await answer.read() == b"Ollama is running"
        async with proxy.call("HEAD", "/") as answer:
            assert answer.status == 200 and await answer.read() == b""
    # The pool holds the one connection every call used.
    assert len(proxy._pool._idle) == 1


async def test_an_answer_left_unread_closes_its_connection(
    upstream: ScriptedUpstream, make_proxy: ProxyFactory
) -> None:
    proxy = await make_proxy(upstream.url)
    async with proxy.call("GET", "/"):
        pass
    assert proxy._pool._idle == []


async def test_a_closed_proxy_takes_no_call(
    upstream: ScriptedUpstream, make_proxy: ProxyFactory
) -> None:
    proxy = await make_proxy(upstream.url)
    await proxy.close()
    with pytest.raises(RuntimeError):
        proxy.call("GET", "/")
