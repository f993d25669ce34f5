"""GatewayClient on its own: error mapping, transport failures, the watch stream."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from cynork import GatewayClient
from cynork._client import is_loopback_host, raise_for_status
from cynork._errors import (
    AuthError,
    ConflictError,
    CynorkError,
    GatewayError,
    NotFoundError,
    ServerError,
    ValidationError,
)
from cynork._http import (
    ConnectError,
    ConnectTimeout,
    MockTransport,
    ReadError,
    RemoteProtocolError,
    Request,
    Response,
)


def _client(handler: object, **kwargs: object) -> GatewayClient:
    return GatewayClient(
        "http://127.0.0.1:12080/",
        token="t",
        refresh_token="r",
        transport=MockTransport(handler),  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("LOCALHOST", True),
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("10.0.0.1", False),
        ("example.com", False),
    ],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize(
    ("status", "kind", "code"),
    [
        (400, ValidationError, 6),
        (401, AuthError, 3),
        (403, AuthError, 3),
        (404, NotFoundError, 4),
        (409, ConflictError, 5),
        (413, ValidationError, 6),
        (422, ValidationError, 6),
        (429, GatewayError, 7),
        (500, GatewayError, 7),
        (502, GatewayError, 7),
        (504, GatewayError, 7),
    ],
)
def test_status_mapping(status: int, kind: type[CynorkError], code: int) -> None:
    with pytest.raises(kind) as info:
        raise_for_status(Response(status, text="plain words"))
    assert info.value.exit_code == code
    assert "plain words" in info.value.format_message()


def test_problem_detail_and_non_object_bodies() -> None:
    with pytest.raises(ServerError, match="gateway error 500: Internal Server Error: \\[1, 2\\]"):
        raise_for_status(Response(500, json=[1, 2]))
    with pytest.raises(NotFoundError, match="not found: Nope"):
        raise_for_status(Response(404, json={"title": "Nope"}))
    with pytest.raises(ServerError, match="retry later"):
        raise_for_status(Response(429))
    raise_for_status(Response(204))


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (ConnectTimeout("slow"), "did not answer in time"),
        (
            ConnectError("refused"),
            "cannot reach the gateway at http://127.0.0.1:12080: refused",
        ),
        (RemoteProtocolError("garbled"), "failed: garbled"),
    ],
)
def test_transport_errors(exc: Exception, message: str) -> None:
    def handler(request: Request) -> Response:
        raise exc

    with _client(handler) as client, pytest.raises(ServerError) as info:
        client.whoami()
    assert message in info.value.format_message()
    assert "Bearer" not in info.value.format_message()


@pytest.mark.parametrize("body", [b"<html>", b"[1]"])
def test_non_object_answers(body: bytes) -> None:
    client = _client(lambda request: Response(200, content=body))
    with pytest.raises(ServerError):
        client.whoami()


@pytest.mark.parametrize("body", [{"task": "x"}, {"status": "queued"}, {"task_id": 7}])
def test_task_answer_must_be_a_task(body: dict[str, object]) -> None:
    client = _client(lambda request: Response(200, json=body))
    with pytest.raises(ServerError, match="no task_id"):
        client.get_task("x")


def test_task_answer_is_the_task_itself() -> None:
    task = {"task_id": "01HTASK", "status": "queued", "input_mode": "prompt"}
    client = _client(lambda request: Response(200, json=task))
    assert client.get_task("01HTASK") == task


def test_task_answer_wrapped_by_an_older_gateway() -> None:
    """Gateways before SPEC §2's bare task answered {"task": {...}}; cynork reads both."""
    task = {"task_id": "01HTASK", "status": "queued"}
    client = _client(lambda request: Response(200, json={"task": task}))
    assert client.get_task("01HTASK") == task


def test_token_answer_without_tokens() -> None:
    client = _client(lambda request: Response(200, json={"access_token": "a"}))
    with pytest.raises(ServerError, match="lacks access_token"):
        client.refresh()


def test_logout_without_refresh_token_sends_nothing() -> None:
    seen: list[Request] = []

    def handler(request: Request) -> Response:
        seen.append(request)
        return Response(204)

    client = GatewayClient("http://127.0.0.1:1", transport=MockTransport(handler))
    client.logout()
    assert seen == []


def _ndjson(*events: object) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


def test_watch_unwraps_results_skips_blank_and_stops_at_terminal() -> None:
    body = (
        _ndjson(
            {"result": {"status": "running"}},
            "ignored scalar",
        )
        + b"\n"
        + _ndjson({"status": "completed", "terminal": True}, {"status": "after"})
    )
    client = _client(lambda request: Response(200, content=body))
    events = list(client.watch_task("t"))
    assert events == [{"status": "running"}, {"status": "completed", "terminal": True}]


@pytest.mark.parametrize(
    ("problem", "kind"),
    [
        ({"title": "Internal Server Error", "status": 500, "detail": "db gone"}, ServerError),
        ({"title": "Not Found", "status": 404}, NotFoundError),
        ({"title": "odd"}, ServerError),
    ],
)
def test_watch_error_frame_mid_stream(problem: dict[str, object], kind: type[CynorkError]) -> None:
    body = _ndjson({"status": "running"}, {"error": problem})
    client = _client(lambda request: Response(200, content=body))
    events = client.watch_task("t")
    assert next(events) == {"status": "running"}
    with pytest.raises(kind):
        next(events)


def test_watch_bad_line() -> None:
    client = _client(lambda request: Response(200, content=b"{oops\n"))
    with pytest.raises(ServerError, match="not JSON"):
        list(client.watch_task("t"))


def test_watch_error_status_and_refresh() -> None:
    calls: list[str] = []

    def handler(request: Request) -> Response:
        calls.append(request.path)
        if request.path == "/v1/auth/refresh":
            return Response(200, json={"access_token": "a2", "refresh_token": "r2"})
        if request.headers["authorization"] == "Bearer t":
            return Response(401)
        return Response(404, json={"title": "Not Found"})

    client = _client(handler)
    with pytest.raises(NotFoundError, match="task t not found"):
        list(client.watch_task("t"))
    assert calls == ["/v1/tasks/t/watch", "/v1/auth/refresh", "/v1/tasks/t/watch"]


def _broken_stream() -> Iterator[bytes]:
    yield b'{"status": "running"}\n'
    raise ReadError("connection reset")


def test_watch_connection_lost_mid_stream() -> None:
    client = _client(lambda request: Response(200, stream=_broken_stream()))
    events = client.watch_task("t")
    assert next(events) == {"status": "running"}
    with pytest.raises(ServerError, match="connection reset"):
        next(events)
