"""The OpenAI-compatible door of the user gateway (SPEC §10): GET /v1/models,
POST /v1/chat/completions (JSON, or server-sent events with `stream: true`) and
POST /v1/embeddings, with OpenAI error objects. A Starlette handler of its own, not a
transcoding of InferenceService: docs/openai-door.md says why."""

from __future__ import annotations

import base64
import json
import logging
import struct
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cynode.inference.v1 import chat_pb2
from cynode.orchestrator import audit
from cynode.orchestrator.auth import Authenticator, Principal
from cynode.orchestrator.inference.metrics import InferenceMetrics
from cynode.orchestrator.inference.redact import redact
from cynode.orchestrator.inference.replicas import Caller, ReplicaRouter
from cynode.orchestrator.inference.router import (
    BadInferenceRequest,
    InferenceError,
)
from cynode.orchestrator.inference.sse import EventStream
from cynode.orchestrator.inference.usage import UsageBook
from cynode.orchestrator.rest.body import (
    BadContentLengthError,
    BodyTooLargeError,
    ClientGoneError,
    read_body,
)
from cynode.orchestrator.store.models import new_id

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 10 * 1024 * 1024
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})

OnRedacted = Callable[[Principal, Counter[str]], Awaitable[None]]


def error_response(status: int, message: str, kind: str, code: str | None) -> JSONResponse:
    """An OpenAI error object; the SDKs map the status to their exception classes."""
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": None, "code": code}},
        status_code=status,
    )


def _from_error(exc: InferenceError) -> JSONResponse:
    return error_response(exc.status, str(exc), exc.kind, exc.code)


class OpenAIDoor:
    def __init__(
        self,
        router: ReplicaRouter,
        authenticator: Authenticator,
        metrics: InferenceMetrics,
        *,
        usage: UsageBook | None = None,
        on_redacted: OnRedacted | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.router = router
        self.usage = usage
        self.authenticator = authenticator
        self.metrics = metrics
        self._on_redacted = on_redacted
        self.max_body_bytes = max_body_bytes
        # Stable per process: OpenAI's `created` of a model is when it was first seen.
        self._first_seen: dict[str, int] = {}

    def routes(self) -> list[Route]:
        return [
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/v1/embeddings", self.embeddings, methods=["POST"]),
            Route("/v1/inference/usage", self.usage_report, methods=["GET"]),
        ]

    # -- shared steps -----------------------------------------------------------------

    async def _principal(self, request: Request) -> Principal | None:
        token = _bearer(request)
        if not token:
            return None
        return await self.authenticator.principal_for_token(token)

    def _caller(self, request: Request, principal: Principal) -> Caller:
        # The token goes along when the call is forwarded to another replica (§10.3).
        return Caller(principal.user_id, principal.max_inference_requests, _bearer(request))

    async def _body(self, request: Request) -> dict[str, Any]:
        try:
            raw = await read_body(request.scope, request.receive, self.max_body_bytes)
        except BodyTooLargeError:
            raise _Refused(413, f"request body is over {self.max_body_bytes} bytes") from None
        except BadContentLengthError:
            raise _Refused(400, "bad Content-Length") from None
        try:
            body = json.loads(raw)
        except ValueError:
            raise _Refused(400, "request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise _Refused(400, "request body must be a JSON object")
        return body

    async def _start(self, request: Request) -> tuple[Principal, dict[str, Any]]:
        principal = await self._principal(request)
        if principal is None:
            raise _Refused(
                401, "missing or invalid access token", "invalid_request_error", "invalid_api_key"
            )
        return principal, await self._body(request)

    # -- GET /v1/models ---------------------------------------------------------------

    async def models(self, request: Request) -> Response:
        if await self._principal(request) is None:
            return error_response(
                401, "missing or invalid access token", "invalid_request_error", "invalid_api_key"
            )
        now = int(time.time())
        data = [
            {
                "id": name,
                "object": "model",
                "created": self._first_seen.setdefault(name, now),
                "owned_by": "cynode",
            }
            for name in self.router.models()
        ]
        return JSONResponse({"object": "list", "data": data})

    # -- POST /v1/chat/completions ----------------------------------------------------

    async def chat(self, request: Request) -> Response:
        arrived = time.perf_counter()
        try:
            principal, body = await self._start(request)
            chat, stream, include_usage = _chat_request(body)
            found: Counter[str] = Counter()
            for message in chat.messages:
                message.content = redact(message.content, found)
            if found:
                await self._redacted(principal, found)
        except _Refused as refused:
            return refused.response()
        except ClientGoneError:
            return Response(status_code=400)
        model = chat.model
        pieces = self.router.chat(self._caller(request, principal), chat)
        try:
            first = await anext(pieces)
        except InferenceError as exc:
            self.metrics.requests.labels("chat", model, exc.code).inc()
            return _from_error(exc)
        self.metrics.first_token.labels(model).observe(time.perf_counter() - arrived)
        completion_id = f"chatcmpl-{new_id().lower()}"
        created = int(time.time())
        if not stream:
            return await self._whole(pieces, first, completion_id, created, model)
        return EventStream(
            self._events(pieces, first, completion_id, created, model, include_usage),
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    async def _whole(
        self,
        pieces: AsyncIterator[chat_pb2.ChatChunk],
        first: chat_pb2.ChatChunk,
        completion_id: str,
        created: int,
        model: str,
    ) -> Response:
        text = [first.content]
        last = first
        try:
            async for chunk in pieces:
                text.append(chunk.content)
                last = chunk
        except InferenceError as exc:
            self.metrics.requests.labels("chat", model, exc.code).inc()
            return _from_error(exc)
        finally:
            await _close(pieces)
        self._count("chat", model, last.usage)
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(text)},
                        "logprobs": None,
                        "finish_reason": last.finish_reason or "stop",
                    }
                ],
                "usage": _usage(last.usage),
            }
        )

    async def _events(
        self,
        pieces: AsyncIterator[chat_pb2.ChatChunk],
        first: chat_pb2.ChatChunk,
        completion_id: str,
        created: int,
        model: str,
        include_usage: bool,
    ) -> AsyncIterator[bytes]:
        base = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
        }

        def event(delta: dict[str, Any], finish: str | None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            extra = {"usage": None} if include_usage else {}
            return _sse({**base, "choices": [choice], **extra})

        chunk = first
        try:
            yield event({"role": "assistant", "content": chunk.content}, None)
            while not chunk.finish_reason:
                chunk = await anext(pieces)
                if chunk.content:
                    yield event({"content": chunk.content}, None)
        except InferenceError as exc:
            # Past the status line: OpenAI's streams report errors as an error event.
            self.metrics.requests.labels("chat", model, exc.code).inc()
            yield _sse({"error": {"message": str(exc), "type": exc.kind, "code": exc.code}})
            return
        except StopAsyncIteration:
            pass
        finally:
            # A client that left stops the model now, not when the generator is collected.
            await _close(pieces)
        yield event({}, chunk.finish_reason or "stop")
        self._count("chat", model, chunk.usage)
        if include_usage:
            yield _sse({**base, "choices": [], "usage": _usage(chunk.usage)})
        yield b"data: [DONE]\n\n"

    # -- POST /v1/embeddings ----------------------------------------------------------

    async def embeddings(self, request: Request) -> Response:
        try:
            principal, body = await self._start(request)
            embeddings, encoding = _embeddings_request(body)
            found: Counter[str] = Counter()
            cleaned = [redact(text, found) for text in embeddings.input]
            del embeddings.input[:]
            embeddings.input.extend(cleaned)
            if found:
                await self._redacted(principal, found)
        except _Refused as refused:
            return refused.response()
        except ClientGoneError:
            return Response(status_code=400)
        model = embeddings.model
        try:
            result = await self.router.embeddings(self._caller(request, principal), embeddings)
        except InferenceError as exc:
            self.metrics.requests.labels("embeddings", model, exc.code).inc()
            return _from_error(exc)
        self._count("embeddings", model, result.usage)
        data = [
            {"object": "embedding", "index": i, "embedding": _encode(list(e.values), encoding)}
            for i, e in enumerate(result.data)
        ]
        tokens = result.usage.prompt_tokens
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    # -- GET /v1/inference/usage -----------------------------------------------------

    async def usage_report(self, request: Request) -> Response:
        """The caller's tokens per model; an admin may name another user (`?user=`)."""
        principal = await self._principal(request)
        if principal is None:
            return error_response(
                401, "missing or invalid access token", "invalid_request_error", "invalid_api_key"
            )
        if self.usage is None:
            return error_response(503, "usage is not recorded here", "api_error", None)
        handle = request.query_params.get("user") or principal.handle
        user_id = principal.user_id
        if handle != principal.handle:
            if not principal.is_admin:
                return error_response(
                    403, "only administrators read other users' usage", "permission_error", None
                )
            other = await self.usage.user_id(handle)
            if other is None:
                return error_response(404, f"no user {handle!r}", "invalid_request_error", None)
            user_id = other
        rows = await self.usage.by_model(user_id)
        return JSONResponse(
            {
                "object": "list",
                "user": handle,
                "data": [
                    {
                        "model": r.model,
                        "requests": r.requests,
                        "prompt_tokens": r.prompt_tokens,
                        "completion_tokens": r.completion_tokens,
                        "total_tokens": r.prompt_tokens + r.completion_tokens,
                    }
                    for r in rows
                ],
            }
        )

    # -- records ----------------------------------------------------------------------

    def _count(self, kind: str, model: str, usage: chat_pb2.Usage) -> None:
        self.metrics.requests.labels(kind, model, "ok").inc()
        self.metrics.tokens.labels(model, "prompt").inc(usage.prompt_tokens)
        self.metrics.tokens.labels(model, "completion").inc(usage.completion_tokens)

    async def _redacted(self, principal: Principal, found: Counter[str]) -> None:
        for kind, n in found.items():
            self.metrics.redacted.labels(kind).inc(n)
        log.info(
            "replaced %d secret(s) in a request of %s: %s",
            sum(found.values()),
            principal.handle,
            ", ".join(f"{k}={n}" for k, n in sorted(found.items())),
        )
        if self._on_redacted is not None:
            await self._on_redacted(principal, found)


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class _Refused(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = status
        self.kind = kind
        self.code = code

    def response(self) -> JSONResponse:
        return error_response(self.http_status, str(self), self.kind, self.code)


async def _close(pieces: AsyncIterator[chat_pb2.ChatChunk]) -> None:
    aclose = getattr(pieces, "aclose", None)
    if aclose is not None:
        await aclose()


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"


def _usage(usage: chat_pb2.Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def _encode(values: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
    return values


def _text(content: object) -> str:
    """A message's content: a string, or OpenAI's list of parts (text parts joined)."""
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise _Refused(400, "only text content parts are supported")
            text = part.get("text")
            if not isinstance(text, str):
                raise _Refused(400, "a text part needs a string `text`")
            texts.append(text)
        return "".join(texts)
    raise _Refused(400, "message content must be a string or a list of text parts")


def _number(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Refused(400, f"{name} must be a number")
    return float(value)


def _chat_request(body: dict[str, Any]) -> tuple[chat_pb2.ChatRequest, bool, bool]:
    """OpenAI's chat body as a ChatRequest; unknown fields are ignored."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _Refused(400, "model is required (a string)")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _Refused(400, "messages must be a non-empty list")
    chat = chat_pb2.ChatRequest(model=model)
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise _Refused(400, f"each message needs a role ({', '.join(sorted(_ROLES))})")
        role = "system" if message["role"] == "developer" else message["role"]
        chat.messages.add(role=role, content=_text(message.get("content")))
    options = chat.options
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise _Refused(400, "max_tokens must be a positive integer")
        options.max_tokens = max_tokens
    temperature = _number(body, "temperature")
    if temperature is not None:
        if not 0 <= temperature <= 2:
            raise _Refused(400, "temperature must be between 0 and 2")
        options.temperature = temperature
    top_p = _number(body, "top_p")
    if top_p is not None:
        if not 0 <= top_p <= 1:
            raise _Refused(400, "top_p must be between 0 and 1")
        options.top_p = top_p
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _Refused(400, "stop must be a string or a list of strings")
        options.stop.extend(stop)
    seed = body.get("seed")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise _Refused(400, "seed must be an integer")
        options.seed = seed
    n = body.get("n", 1)
    if n not in (1, None):
        raise _Refused(400, "n must be 1: one choice per request")
    stream = body.get("stream") is True
    stream_options = body.get("stream_options") or {}
    include_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
    return chat, stream, include_usage


def _embeddings_request(body: dict[str, Any]) -> tuple[chat_pb2.EmbeddingsRequest, str]:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _Refused(400, "model is required (a string)")
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
        raise _Refused(400, "input must be a string or a non-empty list of strings")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise _Refused(400, "encoding_format must be float or base64")
    return chat_pb2.EmbeddingsRequest(model=model, input=inputs), str(encoding)


__all__ = ["BadInferenceRequest", "OpenAIDoor", "error_response", "record_redaction"]


async def record_redaction(
    factory: async_sessionmaker[AsyncSession], principal: Principal, found: Counter[str]
) -> None:
    """The replacement, recorded as an audit row: kinds and counts, never the values."""
    await audit.record(
        factory,
        audit.SECRET_REDACTED,
        "redacted",
        user_id=principal.user_id,
        handle=principal.handle,
        kinds=dict(sorted(found.items())),
    )
