"""The REST shim: the google.api.http surface served in process from the servicers.

Public surface:
- build_rest_app(services, *, extra_routes=(), max_body_bytes=..., pool=None) -> Starlette
- RestServicerContext: the servicer context REST calls get
- problems: the one gRPC-code → HTTP/problem+json table
"""

from cynode.orchestrator.rest import problems
from cynode.orchestrator.rest.app import (
    DEFAULT_MAX_BODY_BYTES,
    HTTP_STATUS_KEY,
    NDJSON,
    RETRY_AFTER_KEY,
    build_rest_app,
)
from cynode.orchestrator.rest.bindings import Binding, BindingError, collect_bindings
from cynode.orchestrator.rest.context import RestAbortError, RestServicerContext
from cynode.orchestrator.rest.problems import PROBLEM_JSON, ProblemKind, problem_response

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "HTTP_STATUS_KEY",
    "NDJSON",
    "PROBLEM_JSON",
    "RETRY_AFTER_KEY",
    "Binding",
    "BindingError",
    "ProblemKind",
    "RestAbortError",
    "RestServicerContext",
    "build_rest_app",
    "collect_bindings",
    "problem_response",
    "problems",
]
