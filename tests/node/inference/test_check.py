"""check_inference against a real HTTP server standing in for Ollama."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from cynode.node.capability import InferenceStatus
from cynode.node.inference.check import InferenceUnavailable, check_inference


@pytest.fixture
async def ollama_stand_in() -> AsyncIterator[tuple[str, dict[str, object]]]:
    state: dict[str, object] = {"status": 200, "body": {"models": [{"name": "smollm2:135m"}]}}

    async def tags(_: web.Request) -> web.Response:
        body = state["body"]
        if isinstance(body, str):
            return web.Response(text=body, status=int(str(state["status"])))
        return web.json_response(body, status=int(str(state["status"])))

    app = web.Application()
    app.router.add_get("/api/tags", tags)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", state
    await runner.cleanup()


async def test_inference_check_against_an_http_server(
    ollama_stand_in: tuple[str, dict[str, object]],
) -> None:
    url, state = ollama_stand_in
    assert await check_inference("none", url) == InferenceStatus(False, [])
    assert await check_inference("existing", url) == InferenceStatus(True, ["smollm2:135m"])
    state["status"] = 500
    with pytest.raises(InferenceUnavailable, match="answered 500"):
        await check_inference("existing", url)
    state["status"], state["body"] = 200, "not json"
    with pytest.raises(InferenceUnavailable, match="Ollama's JSON"):
        await check_inference("existing", url)
    with pytest.raises(InferenceUnavailable, match="unreachable"):
        await check_inference("existing", "http://127.0.0.1:1")
    with pytest.raises(InferenceUnavailable, match="Ollama's JSON"):
        await check_inference("container", url)  # the node's container is checked alike
    with pytest.raises(InferenceUnavailable, match="not supported"):
        await check_inference("cloud", url)
