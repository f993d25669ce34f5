"""The one table from gRPC status codes to HTTP statuses and RFC 9457 problem bodies.

Both the REST shim and the OpenAPI generator read it, so a status a servicer picks on
gRPC is the status a REST client sees. The `type` URNs are part of the REST contract:
clients branch on them, so never rename one.
"""

from __future__ import annotations

import http
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from starlette.responses import Response

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:cynode:problem:"


@dataclass(frozen=True)
class ProblemKind:
    """What a class of failure looks like on REST."""

    status: int
    slug: str
    title: str

    @property
    def type(self) -> str:
        return TYPE_PREFIX + self.slug


# The google.rpc mapping (google/rpc/code.proto), which Envoy's transcoder also uses.
GRPC_PROBLEMS: Mapping[grpc.StatusCode, ProblemKind] = {
    grpc.StatusCode.CANCELLED: ProblemKind(499, "cancelled", "Request cancelled"),
    grpc.StatusCode.UNKNOWN: ProblemKind(500, "unknown", "Unknown error"),
    grpc.StatusCode.INVALID_ARGUMENT: ProblemKind(400, "invalid-argument", "Invalid argument"),
    grpc.StatusCode.DEADLINE_EXCEEDED: ProblemKind(504, "deadline-exceeded", "Deadline exceeded"),
    grpc.StatusCode.NOT_FOUND: ProblemKind(404, "not-found", "Not found"),
    grpc.StatusCode.ALREADY_EXISTS: ProblemKind(409, "already-exists", "Already exists"),
    grpc.StatusCode.PERMISSION_DENIED: ProblemKind(403, "permission-denied", "Permission denied"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: ProblemKind(429, "resource-exhausted", "Too many requests"),
    grpc.StatusCode.FAILED_PRECONDITION: ProblemKind(
        400, "failed-precondition", "Failed precondition"
    ),
    grpc.StatusCode.ABORTED: ProblemKind(409, "aborted", "Conflict"),
    grpc.StatusCode.OUT_OF_RANGE: ProblemKind(400, "out-of-range", "Out of range"),
    grpc.StatusCode.UNIMPLEMENTED: ProblemKind(501, "unimplemented", "Not implemented"),
    grpc.StatusCode.INTERNAL: ProblemKind(500, "internal", "Internal error"),
    grpc.StatusCode.UNAVAILABLE: ProblemKind(503, "unavailable", "Service unavailable"),
    grpc.StatusCode.DATA_LOSS: ProblemKind(500, "data-loss", "Data loss"),
    grpc.StatusCode.UNAUTHENTICATED: ProblemKind(401, "unauthenticated", "Unauthenticated"),
}

# Failures the shim itself detects, and HTTP statuses a servicer may force through
# the `x-http-status` trailer. Chosen to match the gRPC kinds where one fits, so a
# client sees the same `type` whether the shim or a servicer said no.
BAD_REQUEST = GRPC_PROBLEMS[grpc.StatusCode.INVALID_ARGUMENT]
NOT_FOUND = GRPC_PROBLEMS[grpc.StatusCode.NOT_FOUND]
INTERNAL = GRPC_PROBLEMS[grpc.StatusCode.INTERNAL]
METHOD_NOT_ALLOWED = ProblemKind(405, "method-not-allowed", "Method not allowed")
PAYLOAD_TOO_LARGE = ProblemKind(413, "payload-too-large", "Payload too large")
CONFLICT = ProblemKind(409, "conflict", "Conflict")
# An artifact download's Range past the end of the file (RFC 9110 §15.5.17). Only the
# download route answers it (SPEC §2.11), never a servicer through `x-http-status`.
RANGE_NOT_SATISFIABLE = ProblemKind(416, "range-not-satisfiable", "Range not satisfiable")

HTTP_PROBLEMS: Mapping[int, ProblemKind] = {
    400: BAD_REQUEST,
    401: GRPC_PROBLEMS[grpc.StatusCode.UNAUTHENTICATED],
    403: GRPC_PROBLEMS[grpc.StatusCode.PERMISSION_DENIED],
    404: NOT_FOUND,
    405: METHOD_NOT_ALLOWED,
    # A generic 409 (a servicer's override, e.g. cancelling a finished task) is a
    # conflict with the resource's state, not a duplicate: ALREADY_EXISTS keeps its own.
    409: CONFLICT,
    413: PAYLOAD_TOO_LARGE,
    429: GRPC_PROBLEMS[grpc.StatusCode.RESOURCE_EXHAUSTED],
    500: INTERNAL,
    501: GRPC_PROBLEMS[grpc.StatusCode.UNIMPLEMENTED],
    503: GRPC_PROBLEMS[grpc.StatusCode.UNAVAILABLE],
    504: GRPC_PROBLEMS[grpc.StatusCode.DEADLINE_EXCEEDED],
}

# The detail of an unexpected failure: whatever went wrong stays in the log.
GENERIC_INTERNAL_DETAIL = "internal error"


def kind_for_code(code: grpc.StatusCode) -> ProblemKind:
    """The problem kind of a non-OK gRPC status (OK is no problem: UNKNOWN then)."""
    return GRPC_PROBLEMS.get(code, GRPC_PROBLEMS[grpc.StatusCode.UNKNOWN])


def kind_for_http_status(status: int) -> ProblemKind:
    """The problem kind of an HTTP error status, for statuses no gRPC code implies."""
    known = HTTP_PROBLEMS.get(status)
    if known is not None:
        return known
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    slug = "-".join(phrase.lower().replace("'", "").split()) or "error"
    return ProblemKind(status, slug, phrase)


def kind_for(code: grpc.StatusCode, http_status: int | None = None) -> ProblemKind:
    """The kind of a failed call, honouring a servicer's `x-http-status` override."""
    kind = kind_for_code(code)
    if http_status is None or http_status == kind.status:
        return kind
    return kind_for_http_status(http_status)


def problem_body(kind: ProblemKind, detail: str) -> dict[str, Any]:
    return {"type": kind.type, "title": kind.title, "status": kind.status, "detail": detail}


def problem_bytes(kind: ProblemKind, detail: str) -> bytes:
    return json.dumps(problem_body(kind, detail), ensure_ascii=False).encode()


def problem_response(
    kind: ProblemKind, detail: str, headers: Mapping[str, str] | None = None
) -> Response:
    """An application/problem+json response of `kind`."""
    return Response(
        problem_bytes(kind, detail),
        status_code=kind.status,
        media_type=PROBLEM_JSON,
        headers=dict(headers or {}),
    )
