"""Shared pieces of the node's inference tests: an Ollama stand-in on TCP, one the base
image can run as the Ollama container, and podman run the way an operator would."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import web

from cynode.node.config import REPO_CONTAINERS_CONF

BASE_IMAGE = "localhost/cynode-base:latest"
# An Ollama stand-in for container mode (no ollama image can be pulled here): python3's
# stdlib in the base image answering /api/tags like Ollama on the container's port.
STAND_IN = (
    "import http.server, json\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = json.dumps({'models': [{'name': 'stand-in:1'}]}).encode()\n"
    "        self.send_response(200); self.end_headers(); self.wfile.write(body)\n"
    "http.server.HTTPServer(('0.0.0.0', 11434), H).serve_forever()\n"
)


def podman(*args: str) -> subprocess.CompletedProcess[str]:
    env = {"CONTAINERS_CONF": str(REPO_CONTAINERS_CONF), "PATH": "/usr/bin:/usr/sbin:/bin"}
    return subprocess.run(["podman", *args], capture_output=True, text=True, env=env, check=False)


@pytest.fixture
async def tags_server() -> AsyncIterator[tuple[str, list[str]]]:
    """A tiny Ollama stand-in on TCP that records the paths it is asked for."""
    paths: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        paths.append(request.path)
        return web.json_response({"models": [{"name": "tiny:1"}, {"model": "other:2"}]})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", paths
    await runner.cleanup()


@pytest.fixture
def stand_in_names() -> Iterator[tuple[str, str]]:
    name, volume = "cynode-test-ollama", "cynode-test-ollama-models"
    yield name, volume
    podman("rm", "-f", name)
    podman("volume", "rm", "-f", volume)
