"""No credential and no hop-by-hop header crosses the proxy, in either direction."""

from __future__ import annotations

import aiohttp

from tests.proxy.conftest import ProxyFactory, ScriptedUpstream, raw_exchange

CREDENTIALS = {"authorization", "cookie", "proxy-authorization"}


async def test_credentials_never_reach_upstream(
    upstream: ScriptedUpstream, make_proxy: ProxyFactory
) -> None:
    proxy = await make_proxy(upstream.url)
    async with (
        aiohttp.ClientSession() as client,
        client.post(
            f"http://{proxy.addresses[0]}/api/chat",
            data=b"{}",
            headers={
                "Authorization": "Bearer sk-client-secret",
                "Cookie": "sid=client-secret",
                "Proxy-Authorization": "Basic Y2xpZW50OnNlY3JldA==",
                "X-Request-Id": "r1",
            },
        ) as response,
    ):
        assert response.status == 200
        # The upstream's cookie never reaches the sandbox either.
        assert "Set-Cookie" not in response.headers
        assert response.headers["X-Kept"] == "yes"
    names = upstream.header_names()
    assert not names & CREDENTIALS
    assert "x-request-id" in names
    assert all("client-secret" not in value for _, value in upstream.seen[0].headers)


async def test_hop_by_hop_stripped_towards_upstream(
    upstream: ScriptedUpstream, make_proxy: ProxyFactory
) -> None:
    proxy = await make_proxy(upstream.url)
    response = await raw_exchange(
        proxy.tcp_ports[0],
        b"GET /api/tags HTTP/1.1\r\nHost: sandbox.invalid\r\n"
        b"Connection: keep-alive, X-Hop-Named\r\nX-Hop-Named: secret\r\n"
        b"Keep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: X-Trail\r\n"
        b"Proxy-Authorization: Basic eDp5\r\nX-End-To-End: kept\r\n\r\n",
    )
    assert response.status == 200
    names = upstream.header_names()
    for dropped in ("x-hop-named", "keep-alive", "te", "trailer", "proxy-authorization"):
        assert dropped not in names
    assert "x-end-to-end" in names
    headers = dict((k.lower(), v) for k, v in upstream.seen[0].headers)
    assert headers["host"] != "sandbox.invalid"


async def test_hop_by_hop_stripped_towards_client(
    upstream: ScriptedUpstream, make_proxy: ProxyFactory
) -> None:
    proxy = await make_proxy(upstream.url)
    response = await raw_exchange(proxy.tcp_ports[0], b"GET /api/tags HTTP/1.1\r\nHost: x\r\n\r\n")
    assert response.status == 200
    names = {name.lower() for name, _ in response.headers}
    for dropped in ("x-resp-hop", "keep-alive", "proxy-authenticate", "trailer", "set-cookie"):
        assert dropped not in names
    assert response.header("X-Kept") == "yes"
    assert response.header("Content-Type") == "application/json; charset=utf-8"


async def test_upgrade_header_not_forwarded(
    upstream: ScriptedUpstream, make_proxy: ProxyFactory
) -> None:
    proxy = await make_proxy(upstream.url)
    response = await raw_exchange(
        proxy.tcp_ports[0],
        b"GET /api/tags HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: close\r\n\r\n",
    )
    assert response.status == 200
    assert "upgrade" not in upstream.header_names()
