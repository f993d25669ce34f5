"""What may pass the proxy: paths, methods and headers.

Paths are matched against the raw request path exactly (no decoding, no dot-segment
folding), so ``/api/%70ull`` or ``/api/generate/../pull`` never reach the upstream
under an allowed name: they are simply unknown (404).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum

_GET = frozenset({"GET", "HEAD"})
_POST = frozenset({"POST"})

# Path → methods. GET paths also answer HEAD because Ollama registers HEAD for them and
# clients probe "/" with it to see whether the server runs.
ALLOWED_PATHS: Mapping[str, frozenset[str]] = {
    "/": _GET,
    "/api/generate": _POST,
    "/api/chat": _POST,
    "/api/embed": _POST,
    "/api/embeddings": _POST,
    "/api/show": _POST,
    "/api/tags": _GET,
    "/api/version": _GET,
    "/v1/chat/completions": _POST,
    "/v1/completions": _POST,
    "/v1/embeddings": _POST,
    "/v1/models": _GET,
}

# Model management changes what the node serves; a sandbox must never do that.
FORBIDDEN_PATHS = frozenset({"/api/pull", "/api/push", "/api/delete", "/api/create", "/api/copy"})

HEALTH_PATH = "/healthz"


class Verdict(Enum):
    ALLOW = "allow"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    BAD_METHOD = "bad_method"


def judge(method: str, raw_path: str) -> Verdict:
    """Decide one request by its method and raw path (without query string)."""
    methods = ALLOWED_PATHS.get(raw_path)
    if methods is None:
        if raw_path in FORBIDDEN_PATHS or raw_path.rstrip("/") in FORBIDDEN_PATHS:
            return Verdict.FORBIDDEN
        return Verdict.NOT_FOUND
    if method not in methods:
        return Verdict.BAD_METHOD
    return Verdict.ALLOW


def allowed_methods(raw_path: str) -> list[str]:
    return sorted(ALLOWED_PATHS.get(raw_path, frozenset()))


def refusal(method: str, raw_path: str) -> tuple[int, str, dict[str, str]] | None:
    """The answer to a request the proxy does not forward (status, message, extra
    headers), or None: one wording for the listeners and for an in-process caller."""
    verdict = judge(method, raw_path)
    if verdict is Verdict.FORBIDDEN:
        return 403, "model management is not allowed through this proxy", {}
    if verdict is Verdict.NOT_FOUND:
        return 404, "not found", {}
    if verdict is Verdict.BAD_METHOD:
        return 405, "method not allowed", {"Allow": ", ".join(allowed_methods(raw_path))}
    return None


# RFC 9110 §7.6.1 hop-by-hop headers, plus Expect (the proxy answers 100-continue
# itself) and Host/Content-Length (recomputed for the next hop).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "expect",
        "host",
    }
)

# Credentials never cross the proxy in either direction.
CREDENTIAL_REQUEST_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
CREDENTIAL_RESPONSE_HEADERS = frozenset({"set-cookie", "set-cookie2", "www-authenticate"})


def _connection_named(headers: Iterable[tuple[str, str]]) -> set[str]:
    named: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            named.update(token.strip().lower() for token in value.split(",") if token.strip())
    return named


def _filter(headers: Iterable[tuple[str, str]], extra: frozenset[str]) -> list[tuple[str, str]]:
    items = list(headers)
    drop = HOP_BY_HOP | extra | _connection_named(items)
    return [(name, value) for name, value in items if name.lower() not in drop]


def request_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Headers to send upstream: no hop-by-hop, no credentials, no Content-Length.

    Content-Length is dropped here and re-added by the caller only when the body is
    forwarded as declared, so a lie in it cannot desynchronise the upstream connection.
    """
    return [
        (name, value)
        for name, value in _filter(headers, CREDENTIAL_REQUEST_HEADERS)
        if name.lower() != "content-length"
    ]


def response_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Headers to send to the client: no hop-by-hop, no cookies."""
    return _filter(headers, CREDENTIAL_RESPONSE_HEADERS)
