from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from cynode.orchestrator.rest import build_rest_app
from tests.orchestrator.rest.echo import SERVICE_NAME, EchoServicer


@pytest.fixture
def echo() -> EchoServicer:
    return EchoServicer()


@pytest.fixture
def app(echo: EchoServicer) -> Starlette:
    return build_rest_app({SERVICE_NAME: echo}, max_body_bytes=1024)


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40123))
    async with httpx.AsyncClient(transport=transport, base_url="http://shim") as http:
        yield http
