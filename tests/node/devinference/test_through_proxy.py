"""The production shape on one machine: client → proxy (TCP) → relay (UDS) → model."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from cynode.node.devinference import DevInferenceHandle
from cynode.proxy import ProxyConfig, parse_listen, parse_upstream, start_proxy
from tests.node.devinference.conftest import MODEL

pytestmark = pytest.mark.model


async def test_tokens_stream_through_sidecar_and_relay(
    dev_server: DevInferenceHandle, tmp_path: Path
) -> None:
    relay_sock = tmp_path / "relay.sock"
    relay = await start_proxy(
        ProxyConfig(
            upstream=parse_upstream(dev_server.url), listen=(parse_listen(f"unix:{relay_sock}"),)
        )
    )
    sidecar = await start_proxy(
        ProxyConfig(
            upstream=parse_upstream(f"unix:{relay_sock}"),
            listen=(parse_listen("127.0.0.1:0"),),
        )
    )
    try:
        async with aiohttp.ClientSession() as client:
            async with client.post(
                f"http://{sidecar.addresses[0]}/api/generate",
                json={"model": MODEL, "prompt": "Hello!", "options": {"num_predict": 10}},
                headers={"Authorization": "Bearer never-forwarded"},
            ) as response:
                assert response.status == 200
                lines = [json.loads(raw) async for raw in response.content]
            assert lines[-1]["done"] is True
            assert "".join(line["response"] for line in lines).strip()
            async with client.post(
                f"http://{sidecar.addresses[0]}/api/pull", json={"model": MODEL}
            ) as response:
                assert response.status == 403
            async with client.get(f"http://{sidecar.addresses[0]}/api/tags") as response:
                assert (await response.json())["models"][0]["name"] == MODEL
    finally:
        await asyncio.gather(sidecar.close(), relay.close())
