"""Unary calls through the shim: routing, request building, responses."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from cynode.orchestrator.rest import BindingError, build_rest_app
from cynode.shimtest.v1 import shimtest_pb2_grpc
from tests.orchestrator.rest.echo import SERVICE_NAME, EchoServicer

PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["type"] == f"urn:cynode:problem:{slug}"
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str)
    return dict(body)


async def test_path_variables_are_decoded_and_defaults_printed(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/shelves/top%20shelf/things/a%2Fb")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "thing": {
            "thing_id": "a/b",
            "name": "",
            "size": 0,
            "tags": [],
            "color": "COLOR_UNSPECIFIED",
            "flag": False,
        },
        "shelf": "top shelf",
        "limit": 0,
        "tags": [],
        "verbose": False,
        "color": "COLOR_UNSPECIFIED",
    }


async def test_query_parameters_fill_scalars_repeated_enums_and_bools(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(
        "/v1/shelves/s/things/t",
        params=[
            ("limit", "5"),
            ("tags", "a"),
            ("tags", "b"),
            ("verbose", "true"),
            ("color", "COLOR_BLUE"),
            ("no_such_field", "ignored"),
            ("shelf", "not-the-path-one"),
        ],
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["limit"] == 5
    assert body["tags"] == ["a", "b"]
    assert body["verbose"] is True
    assert body["color"] == "COLOR_BLUE"
    assert body["shelf"] == "s"


async def test_enum_by_number_and_false_bool(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/shelves/s/things/t?color=1&verbose=false")
    assert response.json()["color"] == "COLOR_RED"
    assert response.json()["verbose"] is False


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("verbose=yes", "verbose: expected true or false"),
        ("limit=five", "limit: expected an integer"),
        ("limit=99999999999", "limit: value out of range"),
        ("limit=1&limit=2", "limit: expected one value, got 2"),
        ("color=COLOR_GREEN", "color: unknown enum value"),
        ("color=7", "color: unknown enum value"),
        ("tags=a&verbose=1", "verbose: expected true or false"),
    ],
)
async def test_bad_query_values_are_400(client: httpx.AsyncClient, query: str, detail: str) -> None:
    response = await client.get(f"/v1/shelves/s/things/t?{query}")
    # The detail names the parameter and what is wrong with its value.
    assert assert_problem(response, 400, "invalid-argument")["detail"] == (
        f"query parameter {detail}"
    )


async def test_path_that_is_not_utf8_is_400(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/shelves/%ff/things/t")
    assert_problem(response, 400, "invalid-argument")


async def test_headers_and_peer_reach_the_servicer(
    client: httpx.AsyncClient, echo: EchoServicer
) -> None:
    await client.get("/v1/shelves/s/things/t", headers={"Authorization": "Bearer abc"})
    assert ("authorization", "Bearer abc") in echo.seen_metadata
    assert echo.seen_peer == "ipv4:127.0.0.1:40123"


async def test_field_body_and_201_from_trailing_metadata(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/shelves/s1/things", json={"thing_id": "t1", "name": "box", "tags": ["x"]}
    )
    assert response.status_code == 201
    body = response.json()
    assert body["shelf"] == "s1"
    assert body["thing"]["name"] == "box"
    assert body["thing"]["tags"] == ["x"]


async def test_star_body_with_nested_path_field(client: httpx.AsyncClient) -> None:
    response = await client.patch(
        "/v1/things/from-path",
        json={
            "thing": {"thing_id": "from-body", "size": 3, "color": "COLOR_RED", "flag": True},
            "note": "hi",
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["note"] == "hi"
    assert body["thing"]["thing_id"] == "from-path"
    assert body["thing"]["size"] == 3
    assert body["thing"]["color"] == "COLOR_RED"
    assert body["thing"]["flag"] is True


async def test_empty_body_means_an_empty_message(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/fail", content=b"")
    assert response.status_code == 200
    assert response.json() == {}


async def test_204_has_no_body(client: httpx.AsyncClient) -> None:
    response = await client.delete("/v1/things/t1")
    assert response.status_code == 204
    assert response.content == b""
    assert "content-type" not in response.headers


async def test_unknown_route_is_404(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v1/nothing/here"), 404, "not-found")
    assert_problem(await client.get("/v1/shelves/s/things/t/extra"), 404, "not-found")


async def test_wrong_method_is_405_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/things/t1", json={})
    assert_problem(response, 405, "method-not-allowed")
    assert response.headers["allow"] == "DELETE, PATCH"


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"{not json", "malformed"),
        (b"[1, 2]", "not an object"),
        (b'{"thing": {"size": "big"}}', "wrong type"),
        (b"\xff\xfe\xfa", "not utf-8"),
    ],
)
async def test_bad_json_is_400(client: httpx.AsyncClient, content: bytes, why: str) -> None:
    response = await client.patch(
        "/v1/things/t1", content=content, headers={"content-type": "application/json"}
    )
    assert_problem(response, 400, "invalid-argument")


@pytest.mark.parametrize(
    "content",
    [b"[" * 50_000 + b"]" * 50_000, b'{"thing": ' + b"[" * 500 + b"]" * 500 + b"}"],
)
async def test_deeply_nested_json_is_400(echo: EchoServicer, content: bytes) -> None:
    app = build_rest_app({SERVICE_NAME: echo})
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shim") as http:
        response = await http.patch("/v1/things/t1", content=content)
    assert_problem(response, 400, "invalid-argument")


async def test_bad_json_in_field_body_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/shelves/s/things", json={"size": "big"})
    assert_problem(response, 400, "invalid-argument")


async def test_unknown_body_fields_are_ignored_like_envoy(client: httpx.AsyncClient) -> None:
    response = await client.patch(
        "/v1/things/t1", json={"thing": {"name": "box", "no_such": 1}, "extra": {"a": [1]}}
    )
    assert response.status_code == 200, response.text
    assert response.json()["thing"]["name"] == "box"
    response = await client.post("/v1/shelves/s1/things", json={"name": "box", "nope": 1})
    assert response.status_code == 201, response.text
    assert response.json()["thing"]["name"] == "box"


async def test_oversized_body_by_content_length_is_413(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/fail", content=b" " * 2048)
    body = assert_problem(response, 413, "payload-too-large")
    assert "1024" in str(body["detail"])


async def test_oversized_chunked_body_is_413_without_reading_it_all(
    client: httpx.AsyncClient,
) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(1000):
            sent += 1
            yield b" " * 100

    response = await client.post("/v1/fail", content=chunks())
    assert_problem(response, 413, "payload-too-large")
    # 1024 bytes fit in 11 chunks of 100; the shim stops at the one that crosses.
    assert sent <= 12


async def test_chunked_body_under_the_cap_is_read(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"code": '
        yield b'"NOT_FOUND", "message": "gone"}'

    response = await client.post("/v1/fail", content=chunks())
    body = assert_problem(response, 404, "not-found")
    assert body["detail"] == "gone"


async def test_bad_content_length_is_400(app: Starlette) -> None:
    sent: list[dict[str, object]] = []
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/fail",
        "raw_path": b"/v1/fail",
        "query_string": b"",
        "headers": [(b"content-length", b"12x")],
    }

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await app(scope, receive, send)  # type: ignore[arg-type]
    assert sent[0]["status"] == 400


async def test_client_gone_while_sending_body_gets_no_response(app: Starlette) -> None:
    sent: list[dict[str, object]] = []
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/fail",
        "query_string": b"",
        "headers": [],
    }

    async def receive() -> dict[str, object]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await app(scope, receive, send)  # type: ignore[arg-type]
    assert sent == []


async def test_websocket_is_closed(app: Starlette) -> None:
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await app({"type": "websocket", "path": "/v1/x", "headers": []}, receive, send)  # type: ignore[arg-type]
    assert sent == [{"type": "websocket.close", "code": 1000}]


async def test_extra_routes_come_first(echo: EchoServicer) -> None:
    async def healthz(_: object) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = build_rest_app({SERVICE_NAME: echo}, extra_routes=[Route("/healthz", healthz)])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shim") as http:
        assert (await http.get("/healthz")).text == "ok"
        assert (await http.get("/v1/shelves/s/things/t")).status_code == 200
        assert_problem(await http.get("/nope"), 404, "not-found")


async def test_unimplemented_servicer_method_is_501() -> None:
    app = build_rest_app({SERVICE_NAME: shimtest_pb2_grpc.EchoServiceServicer()})
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shim") as http:
        assert_problem(await http.get("/v1/shelves/s/things/t"), 501, "unimplemented")


def test_unknown_service_is_refused_at_start() -> None:
    with pytest.raises(BindingError, match="not in the descriptor pool"):
        build_rest_app({"cynode.nowhere.v1.Nothing": object()})


def test_servicer_without_the_method_is_refused_at_start() -> None:
    with pytest.raises(BindingError, match="lacks GetThing"):
        build_rest_app({SERVICE_NAME: object()})
