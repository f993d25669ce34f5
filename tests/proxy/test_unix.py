"""Unix sockets on both sides: the sidecar's door out and the node relay's listener."""

from __future__ import annotations

import stat
from pathlib import Path

import aiohttp

from tests.proxy.conftest import ProxyFactory, ScriptedUpstream


async def test_unix_listener_and_tcp_at_once(
    upstream: ScriptedUpstream, make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    sock = tmp_path / "run" / "proxy.sock"
    proxy = await make_proxy(upstream.url, "127.0.0.1:0", f"unix:{sock}")
    assert proxy.addresses[1] == f"unix:{sock}"
    assert proxy.unix_paths == [str(sock)]
    assert stat.S_IMODE(sock.stat().st_mode) == 0o666
    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock))) as client,
        client.get("http://localhost/api/tags") as response,
    ):
        assert response.status == 200
        assert await response.json() == {"models": []}
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"http://{proxy.addresses[0]}/api/tags") as response,
    ):
        assert response.status == 200
    assert len(upstream.seen) == 2
    await proxy.close()
    assert not sock.exists()
    await proxy.close()  # closing twice is harmless


async def test_unix_upstream(upstream: ScriptedUpstream, make_proxy: ProxyFactory) -> None:
    assert upstream.unix_path is not None
    proxy = await make_proxy(f"unix:{upstream.unix_path}")
    async with (
        aiohttp.ClientSession() as client,
        client.post(
            f"http://{proxy.addresses[0]}/api/chat",
            data=b"{}",
            headers={"Authorization": "Bearer x"},
        ) as response,
    ):
        assert response.status == 200
        assert (await response.json())["received"] == 2
    assert "authorization" not in upstream.header_names()


async def test_http_unix_upstream_form(
    upstream: ScriptedUpstream, make_proxy: ProxyFactory
) -> None:
    assert upstream.unix_path is not None
    encoded = upstream.unix_path.replace("/", "%2F")
    proxy = await make_proxy(f"http+unix://{encoded}")
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"http://{proxy.addresses[0]}/") as response,
    ):
        assert await response.text() == "Ollama is running"


async def test_missing_unix_upstream_is_502(make_proxy: ProxyFactory, tmp_path: Path) -> None:
    proxy = await make_proxy(f"unix:{tmp_path / 'nobody.sock'}")
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"http://{proxy.addresses[0]}/api/version") as response,
    ):
        assert response.status == 502
        assert await response.json() == {"error": "upstream unavailable"}


async def test_relay_in_front_of_relay(
    upstream: ScriptedUpstream, make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    """The production chain: sandbox → sidecar (TCP) → UDS → node relay → upstream."""
    relay_sock = tmp_path / "relay.sock"
    await make_proxy(upstream.url, f"unix:{relay_sock}")
    sidecar = await make_proxy(f"unix:{relay_sock}")
    async with (
        aiohttp.ClientSession() as client,
        client.post(f"http://{sidecar.addresses[0]}/api/generate", json={}) as response,
    ):
        assert await response.content.readline() == b'{"response":"one","done":false}\n'
        upstream.release.set()
        assert await response.content.readline() == b'{"response":"two","done":true}\n'
