"""Every gRPC status a servicer can end with, as the REST client sees it."""

from __future__ import annotations

import logging

import grpc
import httpx
import pytest

from cynode.orchestrator.rest import problems
from tests.orchestrator.rest.echo import SECRET
from tests.orchestrator.rest.test_unary import assert_problem

# Written out independently of the shim's table, from google/rpc/code.proto.
EXPECTED = {
    "CANCELLED": (499, "cancelled"),
    "UNKNOWN": (500, "unknown"),
    "INVALID_ARGUMENT": (400, "invalid-argument"),
    "DEADLINE_EXCEEDED": (504, "deadline-exceeded"),
    "NOT_FOUND": (404, "not-found"),
    "ALREADY_EXISTS": (409, "already-exists"),
    "PERMISSION_DENIED": (403, "permission-denied"),
    "RESOURCE_EXHAUSTED": (429, "resource-exhausted"),
    "FAILED_PRECONDITION": (400, "failed-precondition"),
    "ABORTED": (409, "aborted"),
    "OUT_OF_RANGE": (400, "out-of-range"),
    "UNIMPLEMENTED": (501, "unimplemented"),
    "INTERNAL": (500, "internal"),
    "UNAVAILABLE": (503, "unavailable"),
    "DATA_LOSS": (500, "data-loss"),
    "UNAUTHENTICATED": (401, "unauthenticated"),
}


def test_the_table_covers_every_error_code() -> None:
    codes = {code.name for code in grpc.StatusCode if code != grpc.StatusCode.OK}
    assert codes == set(EXPECTED)
    assert {code.name for code in problems.GRPC_PROBLEMS} == codes


@pytest.mark.parametrize("code", sorted(EXPECTED))
async def test_each_code_maps_to_its_http_status(client: httpx.AsyncClient, code: str) -> None:
    response = await client.post("/v1/fail", json={"code": code, "message": f"why {code}"})
    status, slug = EXPECTED[code]
    body = assert_problem(response, status, slug)
    assert body["detail"] == f"why {code}"


async def test_abort_without_details_uses_the_title(client: httpx.AsyncClient) -> None:
    body = assert_problem(
        await client.post("/v1/fail", json={"code": "NOT_FOUND"}), 404, "not-found"
    )
    assert body["detail"] == "Not found"


async def test_set_code_then_return_is_an_error(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/fail", json={"code": "SET_CODE", "message": "not yet"})
    body = assert_problem(response, 400, "failed-precondition")
    assert body["detail"] == "not yet"


async def test_x_http_status_overrides_the_code_status(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/shelves/s/things", json={"name": "n" * 65})
    body = assert_problem(response, 413, "payload-too-large")
    assert body["detail"] == "name over 64 bytes"


async def test_retry_after_trailer_becomes_a_header(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/fail", json={"code": "RETRY"})
    assert_problem(response, 429, "resource-exhausted")
    assert response.headers["retry-after"] == "7"


async def test_servicer_exception_is_500_without_leaking(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="cynode.orchestrator.rest"):
        response = await client.post("/v1/fail", json={"code": "EXCEPTION"})
    body = assert_problem(response, 500, "internal")
    assert body["detail"] == "internal error"
    assert SECRET not in response.text
    assert "Traceback" not in response.text
    # The traceback is kept for the operator.
    assert any(SECRET in (record.exc_text or "") for record in caplog.records)


async def test_wrong_response_type_is_500(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/fail", json={"code": "WRONG_TYPE"})
    assert_problem(response, 500, "internal")


def test_http_only_kinds() -> None:
    assert problems.kind_for_http_status(418).type == "urn:cynode:problem:im-a-teapot"
    assert problems.kind_for_http_status(599).slug == "error"
    assert problems.kind_for(grpc.StatusCode.NOT_FOUND, 404).slug == "not-found"
    assert problems.kind_for(grpc.StatusCode.RESOURCE_EXHAUSTED, 413).status == 413
    assert problems.kind_for_code(grpc.StatusCode.OK).slug == "unknown"
