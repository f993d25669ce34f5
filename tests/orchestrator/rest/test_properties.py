"""Property tests: whatever a client sends to any shimtest route, the shim answers
with a success or a 4xx problem, never a 5xx, unless the servicer was told to fail."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from cynode.orchestrator.rest import build_rest_app
from tests.orchestrator.rest.echo import (
    FAILING_CODES,
    SERVICE_NAME,
    SPECIAL_SHELVES,
    EchoServicer,
)

CLIENT = TestClient(build_rest_app({SERVICE_NAME: EchoServicer()}, max_body_bytes=4096))
KNOWN_NAMES = [
    "thing",
    "thing_id",
    "thingId",
    "name",
    "size",
    "tags",
    "color",
    "flag",
    "note",
    "shelf",
    "code",
    "message",
    "limit",
    "verbose",
    "count",
    "thing.name",
    "thing.size",
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["COLOR_RED", "COLOR_BLUE", "1", "true", "aGk=", "NaN"])
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KNOWN_NAMES) | st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=16,
)
bodies = st.dictionaries(st.sampled_from(KNOWN_NAMES) | st.text(max_size=8), json_values) | (
    json_values
)
queries = st.lists(
    st.tuples(
        st.sampled_from(KNOWN_NAMES) | st.text(max_size=8),
        st.text(max_size=12) | st.sampled_from(["5", "true", "COLOR_RED", "-1", "2147483648"]),
    ),
    max_size=6,
)
segments = st.text(min_size=1, max_size=12).filter(lambda s: s not in SPECIAL_SHELVES)
routes = st.sampled_from(
    [
        ("GET", "/v1/shelves/{a}/things/{b}"),
        ("POST", "/v1/shelves/{a}/things"),
        ("PATCH", "/v1/things/{a}"),
        ("DELETE", "/v1/things/{a}"),
        ("POST", "/v1/fail"),
        ("GET", "/v1/shelves/{a}/things:stream"),
    ]
)


def _told_to_fail(path: str, body: Any) -> bool:
    if path != "/v1/fail" or not isinstance(body, dict):
        return False
    code = body.get("code")
    return isinstance(code, str) and code in FAILING_CODES


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    route=routes,
    a=segments,
    b=segments,
    body=bodies,
    query=queries,
    raw_body=st.booleans(),
    junk=st.binary(max_size=64),
)
def test_no_5xx_for_any_input(
    route: tuple[str, str],
    a: str,
    b: str,
    body: Any,
    query: list[tuple[str, str]],
    raw_body: bool,
    junk: bytes,
) -> None:
    method, template = route
    path = template.format(a=quote(a, safe=""), b=quote(b, safe=""))
    url = f"{path}?{urlencode(query)}" if query else path
    content = junk if raw_body else json.dumps(body).encode()
    response = CLIENT.request(method, url, content=content)
    if _told_to_fail(template, body) and not raw_body:
        return
    assert response.status_code < 500, (url, content, response.text)
    if response.headers.get("content-type") == "application/x-ndjson":
        for line in response.text.splitlines():
            assert "error" not in json.loads(line), line
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == response.status_code
