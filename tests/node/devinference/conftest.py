"""One real dev-inference server (the real model) shared by this folder's tests."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from cynode.node.devinference import DevInferenceHandle, start_dev_inference

MODEL = "smollm2:135m"


@pytest.fixture(scope="package")
async def dev_server() -> AsyncIterator[DevInferenceHandle]:
    # No skip when the extra is missing: start_dev_inference raises DevModelUnavailable,
    # whose message says which extra to install, and the tests fail with it.
    handle = await start_dev_inference("127.0.0.1", 0, n_ctx=1024, default_num_predict=24)
    yield handle
    await handle.close()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session


async def ndjson(response: aiohttp.ClientResponse) -> list[dict[str, Any]]:
    lines = []
    async for raw in response.content:
        assert raw.endswith(b"\n"), raw
        lines.append(json.loads(raw))
    return lines
