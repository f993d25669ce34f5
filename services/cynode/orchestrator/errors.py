"""Aborting an RPC with a status code and, for the REST shim, an HTTP status hint.

The REST shim maps gRPC codes to HTTP through one table; where one code stands for
more than one HTTP status (RESOURCE_EXHAUSTED is 413 or 429), the servicer says which
with the trailing metadata `x-http-status`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn, TypeAlias
from urllib.parse import unquote

import grpc

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

HTTP_STATUS_KEY = "x-http-status"
RETRY_AFTER_KEY = "retry-after"


async def abort(
    context: Context,
    code: grpc.StatusCode,
    detail: str,
    *,
    http_status: int | None = None,
    trailing: Sequence[tuple[str, str]] = (),
) -> NoReturn:
    metadata = list(trailing)
    if http_status is not None:
        metadata.append((HTTP_STATUS_KEY, str(http_status)))
    if metadata:
        context.set_trailing_metadata(tuple(metadata))
    await context.abort(code, detail)


def set_http_status(context: Context, status: int) -> None:
    context.set_trailing_metadata(((HTTP_STATUS_KEY, str(status)),))


def client_address(context: Context) -> str:
    """The caller's address without the port, from grpc's `ipv4:1.2.3.4:5` style peer."""
    peer = context.peer() or ""
    kind, _, rest = peer.partition(":")
    rest = unquote(rest)  # grpc core writes ipv6 peers as ipv6:%5B::1%5D:port
    if kind == "ipv6":
        host = rest.rsplit(":", 1)[0] if rest.startswith("[") else rest
        return host.strip("[]") or "unknown"
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0] or "unknown"
    if kind == "unix":
        return "unix"
    return peer[:128] or "unknown"


def metadata_value(context: Context, key: str) -> str | None:
    for item in context.invocation_metadata() or ():
        k, v = item[0], item[1]
        if k.lower() == key:
            return v.decode("latin-1") if isinstance(v, bytes) else v
    return None
