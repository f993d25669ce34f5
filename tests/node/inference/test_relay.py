"""The relay: the UDS the sidecars forward to, its modes, and its place under the socket
length limit."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx

from cynode.node.inference.relay import RELAY_SOCKET_NAME, InferenceRelay, relay_dir


async def test_relay_socket_is_open_to_the_sidecar_uid_and_forwards(
    tmp_path: Path, tags_server: tuple[str, list[str]]
) -> None:
    url, paths = tags_server
    directory = tmp_path / "inference"
    directory.mkdir()
    (directory / RELAY_SOCKET_NAME).write_text("stale")  # a killed node's leftover
    relay = InferenceRelay(directory, url)
    socket_path = await relay.start()
    assert await relay.start() == socket_path  # idempotent
    try:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o711
        assert stat.S_IMODE(socket_path.stat().st_mode) == 0o666 and socket_path.is_socket()
        transport = httpx.AsyncHTTPTransport(uds=str(socket_path))
        async with httpx.AsyncClient(transport=transport) as client:
            tags = await client.get("http://relay/api/tags", headers={"Authorization": "x"})
            pull = await client.post("http://relay/api/pull", json={"model": "x"})
        assert tags.json()["models"][0]["name"] == "tiny:1"
        assert pull.status_code == 403  # the relay guards too
        assert paths == ["/api/tags"]
    finally:
        await relay.close()
    assert not socket_path.exists() and not relay.running
    await relay.close()


def test_relay_dir_stays_under_the_socket_limit(tmp_path: Path) -> None:
    assert relay_dir(Path("/var/lib/cynode-node")) == Path("/var/lib/cynode-node/inference")
    chosen = relay_dir(tmp_path / ("x" * 120))
    assert len(str(chosen / RELAY_SOCKET_NAME)) <= 100
    chosen.rmdir()
