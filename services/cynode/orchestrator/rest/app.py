"""The REST shim: HTTP requests to the same servicer objects the gRPC ports serve.

Routes come from the google.api.http annotations in the descriptors, so the REST
surface is the one Envoy's grpc_json_transcoder serves from deploy/envoy.yaml.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from typing import Any, cast
from urllib.parse import quote

import anyio
import grpc
import grpc.aio
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message import Message
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import Receive, Scope, Send

from cynode.orchestrator.rest import problems
from cynode.orchestrator.rest.bindings import Binding, collect_bindings
from cynode.orchestrator.rest.body import (
    BadContentLengthError,
    BodyTooLargeError,
    ClientGoneError,
    read_body,
)
from cynode.orchestrator.rest.context import RestServicerContext, format_peer
from cynode.orchestrator.rest.problems import ProblemKind, problem_response
from cynode.orchestrator.rest.transcode import RequestError, build_request, encode_response

_log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 11 * 1024 * 1024
NDJSON = "application/x-ndjson"
JSON = "application/json"
HTTP_STATUS_KEY = "x-http-status"
RETRY_AFTER_KEY = "retry-after"
_NO_BODY_STATUSES = frozenset({204, 304})


def build_rest_app(
    services: Mapping[str, object],
    *,
    extra_routes: Sequence[BaseRoute] = (),
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    pool: DescriptorPool | None = None,
) -> Starlette:
    """A Starlette app serving every HttpRule of `services` (full name → servicer).

    `extra_routes` (health, /openapi.json, ...) are matched first; everything else
    goes to the transcoder, which answers problem+json for unknown routes too.
    """
    bindings = collect_bindings(services, pool)
    app = Starlette(routes=list(extra_routes))
    app.router.default = Transcoder(bindings, max_body_bytes)
    app.state.rest_bindings = bindings
    return app


def _raw_path(scope: Scope) -> str:
    raw = scope.get("raw_path")
    if raw:
        return bytes(raw).decode("latin-1").split("?", 1)[0]
    return quote(str(scope.get("path", "/")))


def _context_for(scope: Scope) -> RestServicerContext:
    headers = [
        (key.decode("latin-1").lower(), value.decode("latin-1"))
        for key, value in scope.get("headers", ())
    ]
    client = scope.get("client")
    peer = format_peer((str(client[0]), int(client[1])) if client else None)
    return RestServicerContext(headers, peer=peer)


def _forced_status(context: RestServicerContext) -> int | None:
    text = context.trailing_value(HTTP_STATUS_KEY)
    if text is None:
        return None
    text = text.strip()
    if text.isdigit() and text.isascii() and 100 <= int(text) <= 599:
        return int(text)
    _log.warning("ignoring x-http-status %r", text)
    return None


def _extra_headers(context: RestServicerContext) -> dict[str, str]:
    retry_after = context.trailing_value(RETRY_AFTER_KEY)
    return {"retry-after": retry_after} if retry_after is not None else {}


def _failure(context: RestServicerContext) -> tuple[ProblemKind, str]:
    """The problem of a call whose context holds a non-OK code."""
    code = context.code() or grpc.StatusCode.UNKNOWN
    forced = _forced_status(context)
    kind = problems.kind_for(code, forced if forced is not None and forced >= 400 else None)
    return kind, context.details() or kind.title


def _failed(context: RestServicerContext) -> bool:
    return context.code() not in (None, grpc.StatusCode.OK)


class Transcoder:
    """The ASGI app behind every annotated route."""

    def __init__(self, bindings: Sequence[Binding], max_body_bytes: int) -> None:
        self._bindings = list(bindings)
        self._max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1000})
            return
        try:
            response = await self._handle(scope, receive, send)
        except ClientGoneError:
            return
        if response is not None:
            await response(scope, receive, send)

    def _route(
        self, raw_path: str, method: str
    ) -> tuple[Binding | None, dict[tuple[str, ...], str], set[str]]:
        allowed: set[str] = set()
        for binding in self._bindings:
            try:
                values = binding.template.match(raw_path)
            except UnicodeDecodeError as exc:
                raise RequestError("path parameter is not valid UTF-8") from exc
            if values is None:
                continue
            if binding.http_method == method:
                return binding, values, allowed
            allowed.add(binding.http_method)
        return None, {}, allowed

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> Response | None:
        method = str(scope["method"]).upper()
        try:
            binding, values, allowed = self._route(_raw_path(scope), method)
        except RequestError as exc:
            return problem_response(problems.BAD_REQUEST, str(exc))
        if binding is None:
            if allowed:
                return problem_response(
                    problems.METHOD_NOT_ALLOWED,
                    f"{method} is not allowed here",
                    headers={"allow": ", ".join(sorted(allowed))},
                )
            return problem_response(problems.NOT_FOUND, "no such route")
        try:
            body = await read_body(scope, receive, self._max_body_bytes) if binding.body else b""
            query = bytes(scope.get("query_string", b"")).decode("latin-1")
            request = build_request(binding, values, query, body)
        except BodyTooLargeError:
            return problem_response(
                problems.PAYLOAD_TOO_LARGE,
                f"request body is over {self._max_body_bytes} bytes",
            )
        except BadContentLengthError:
            return problem_response(problems.BAD_REQUEST, "bad Content-Length")
        except RequestError as exc:
            return problem_response(problems.BAD_REQUEST, str(exc))
        context = _context_for(scope)
        if binding.server_streaming:
            return await _stream(binding, request, context, scope, receive, send)
        return await _unary(binding, request, context)


def _unexpected(binding: Binding, exc: BaseException) -> None:
    _log.error("%s failed on REST", binding.full_name, exc_info=exc)


async def _unary(binding: Binding, request: Message, context: RestServicerContext) -> Response:
    crashed = False
    result: Any = None
    try:
        result = binding.handler(request, context)
        if inspect.isawaitable(result):
            result = await result
    except grpc.aio.AbortError:
        pass
    except Exception as exc:
        crashed = True
        if not _failed(context):
            _unexpected(binding, exc)
    finally:
        context.mark_done()
    headers = _extra_headers(context)
    if _failed(context):
        # Like grpc.aio: a code the servicer set wins even if it then raised.
        kind, detail = _failure(context)
        return problem_response(kind, detail, headers)
    if crashed:
        return problem_response(problems.INTERNAL, problems.GENERIC_INTERNAL_DETAIL, headers)
    try:
        payload = encode_response(binding, result)
    except Exception as exc:
        _unexpected(binding, exc)
        return problem_response(problems.INTERNAL, problems.GENERIC_INTERNAL_DETAIL, headers)
    forced = _forced_status(context)
    status = forced if forced is not None and forced < 400 else 200
    if status in _NO_BODY_STATUSES:
        return Response(status_code=status, headers=headers)
    return Response(payload, status_code=status, media_type=JSON, headers=headers)


def _error_line(kind: ProblemKind, detail: str) -> bytes:
    line = json.dumps({"error": problems.problem_body(kind, detail)}, ensure_ascii=False)
    return line.encode() + b"\n"


async def _stream(
    binding: Binding,
    request: Message,
    context: RestServicerContext,
    scope: Scope,
    receive: Receive,
    send: Send,
) -> Response | None:
    """Server streaming as NDJSON. Returns a Response only when nothing was sent yet."""
    produced: Any = binding.handler(request, context)
    if not inspect.isasyncgen(produced):
        context.mark_done()
        _log.error("%s is not an async generator", binding.full_name)
        return problem_response(problems.INTERNAL, problems.GENERIC_INTERNAL_DETAIL)
    messages = cast(AsyncGenerator[Any, None], produced)
    early: Response | None = None
    try:
        # A client that leaves, even before the first message, cancels the servicer.
        async with anyio.create_task_group() as group:
            group.start_soon(_cancel_on_disconnect, receive, context, group.cancel_scope)
            early = await _first_then_pump(binding, messages, context, send)
            group.cancel_scope.cancel()
    finally:
        await _close_quietly(binding, messages)
        context.mark_done()
    return early


async def _first_then_pump(
    binding: Binding,
    messages: AsyncGenerator[Any, None],
    context: RestServicerContext,
    send: Send,
) -> Response | None:
    # Wait for the first message so an early failure is a plain problem response.
    try:
        first = encode_response(binding, await messages.__anext__()) + b"\n"
    except (StopAsyncIteration, grpc.aio.AbortError):
        first = b""
    except Exception as exc:
        if _failed(context):
            kind, detail = _failure(context)
            return problem_response(kind, detail, _extra_headers(context))
        _unexpected(binding, exc)
        return problem_response(problems.INTERNAL, problems.GENERIC_INTERNAL_DETAIL)
    if not first and _failed(context):
        kind, detail = _failure(context)
        return problem_response(kind, detail, _extra_headers(context))
    forced = _forced_status(context)
    status = forced if forced is not None and forced < 400 else 200
    headers = [(b"content-type", NDJSON.encode()), (b"cache-control", b"no-cache")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await _pump(binding, messages, first, context, send)
    return None


async def _cancel_on_disconnect(
    receive: Receive, context: RestServicerContext, scope: anyio.CancelScope
) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    context.mark_cancelled()
    scope.cancel()


async def _pump(
    binding: Binding,
    messages: AsyncIterator[Any],
    first: bytes,
    context: RestServicerContext,
    send: Send,
) -> None:
    line = first
    while line:
        await send({"type": "http.response.body", "body": line, "more_body": True})
        line = b""
        try:
            line = encode_response(binding, await messages.__anext__()) + b"\n"
        except StopAsyncIteration:
            pass
        except grpc.aio.AbortError:
            pass
        except Exception as exc:
            if not _failed(context):
                _unexpected(binding, exc)
                line = _error_line(problems.INTERNAL, problems.GENERIC_INTERNAL_DETAIL)
                await send({"type": "http.response.body", "body": line, "more_body": True})
                line = b""
    if _failed(context):
        kind, detail = _failure(context)
        await send(
            {"type": "http.response.body", "body": _error_line(kind, detail), "more_body": True}
        )
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _close_quietly(binding: Binding, messages: AsyncGenerator[Any, None]) -> None:
    try:
        await messages.aclose()
    except Exception as exc:
        _unexpected(binding, exc)
