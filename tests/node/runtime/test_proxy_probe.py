"""The host-side readiness probe of the sidecar's proxy, against real sockets."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cynode.node.runtime.proxy_probe import (
    ProxyNotReady,
    proxy_answers,
    wait_for_proxy,
)
from cynode.proxy import ProxyConfig, parse_listen, parse_upstream, start_proxy


async def always(value: bool) -> bool:
    return value


async def test_answers_through_a_long_directory_path(tmp_path: Path) -> None:
    # Deeper than a socket address can hold: the probe connects via /proc/self/fd.
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    assert len(str(deep / "proxy.sock")) > 108
    assert not await proxy_answers(str(deep), "proxy.sock")
    short = tmp_path / "s.sock"
    proxy = await start_proxy(
        ProxyConfig(
            upstream=parse_upstream("http://127.0.0.1:9"), listen=(parse_listen(f"unix:{short}"),)
        )
    )
    try:
        (deep / "proxy.sock").hardlink_to(short)
        assert await proxy_answers(str(deep), "proxy.sock")
        await wait_for_proxy(
            str(deep), "proxy.sock", timeout_s=5, still_running=lambda: always(True)
        )
    finally:
        await proxy.close()


async def test_a_socket_that_is_not_a_proxy_is_not_ready(tmp_path: Path) -> None:
    async def wrong(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.0 503 Busy\r\n\r\n")
        writer.close()

    server = await asyncio.start_unix_server(wrong, str(tmp_path / "p.sock"))
    try:
        assert not await proxy_answers(str(tmp_path), "p.sock")
    finally:
        server.close()
    assert not await proxy_answers(str(tmp_path / "missing-dir"), "p.sock")


async def test_gives_up_at_the_timeout_or_when_the_sidecar_died(tmp_path: Path) -> None:
    with pytest.raises(ProxyNotReady, match=r"not ready within 0\.2s"):
        await wait_for_proxy(
            str(tmp_path), "p.sock", timeout_s=0.2, still_running=lambda: always(True)
        )
    with pytest.raises(ProxyNotReady, match="exited before it was ready"):
        await wait_for_proxy(
            str(tmp_path), "p.sock", timeout_s=5, still_running=lambda: always(False)
        )
