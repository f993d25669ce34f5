"""The OpenAI-compatible surface Ollama also serves (and the proxy allows):
/v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings.

llama-cpp already shapes its results like OpenAI's, so this layer only validates,
picks the sampling parameters, and frames streams as server-sent events.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from cynode.node.devinference._model import DEFAULT_NUM_PREDICT, BadRequest, DevModel
from cynode.node.devinference._worker import ModelWorker

log = logging.getLogger("cynode.node.devinference")


class _Invalid(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str) -> web.Response:
    kind = "invalid_request_error" if status < 500 else "api_error"
    return web.json_response(
        {"error": {"message": message, "type": kind, "param": None, "code": None}},
        status=status,
    )


class OpenAIAPI:
    def __init__(
        self,
        model: DevModel,
        worker: ModelWorker,
        names: set[str],
        *,
        default_num_predict: int = DEFAULT_NUM_PREDICT,
    ) -> None:
        self.model = model
        self.worker = worker
        self._names = names
        self._default_num_predict = default_num_predict

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/embeddings", self._embeddings)

    async def _models(self, request: web.Request) -> web.Response:
        info = self.model.info
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {
                        "id": info.name,
                        "object": "model",
                        "created": int(info.path.stat().st_mtime),
                        "owned_by": "library",
                    }
                ],
            }
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await self._body(request)
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                raise _Invalid(400, "messages must be a non-empty list")
            for message in messages:
                if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                    raise _Invalid(400, "each message needs a role and string content")
            call = {
                "messages": [{"role": m.get("role"), "content": m["content"]} for m in messages]
            }
            call.update(self._sampling(body))
        except _Invalid as invalid:
            return _error(invalid.status, str(invalid))
        return await self._run(request, "chat", call, body.get("stream") is True)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await self._body(request)
            prompt = body.get("prompt")
            if not isinstance(prompt, str):
                raise _Invalid(400, "prompt must be a string")
            call: dict[str, Any] = {"prompt": prompt, **self._sampling(body)}
        except _Invalid as invalid:
            return _error(invalid.status, str(invalid))
        return await self._run(request, "completion", call, body.get("stream") is True)

    async def _run(
        self, request: web.Request, kind: str, call: dict[str, Any], stream: bool
    ) -> web.StreamResponse:
        work: Callable[[Any], Any] = lambda cancel: self.model.openai(  # noqa: E731
            kind, call, stream, cancel
        )
        chunks = self.worker.stream(work)
        async with contextlib.aclosing(chunks):
            try:
                first = await anext(chunks)
            except BadRequest as exc:
                return _error(400, str(exc))
            if not stream:
                return web.json_response(first)
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            try:
                await response.write(_event(first))
                async for chunk in chunks:
                    await response.write(_event(chunk))
                await response.write(b"data: [DONE]\n\n")
                await response.write_eof()
            except ConnectionError:
                log.info("client left mid-generation; stopping it")
            return response

    async def _embeddings(self, request: web.Request) -> web.Response:
        try:
            body = await self._body(request)
            raw = body.get("input")
            inputs = [raw] if isinstance(raw, str) else raw
            if not isinstance(inputs, list) or not inputs:
                raise _Invalid(400, "input must be a string or a non-empty list of strings")
            if not all(isinstance(i, str) for i in inputs):
                raise _Invalid(400, "input must be a string or a non-empty list of strings")
            vectors, tokens = await self.worker.call(lambda: self.model.embed(inputs))
        except _Invalid as invalid:
            return _error(invalid.status, str(invalid))
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "embedding": vector, "index": index}
                    for index, vector in enumerate(vectors)
                ],
                "model": self.model.info.name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise _Invalid(400, "request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise _Invalid(400, "request body must be a JSON object")
        name = body.get("model")
        if not name:
            raise _Invalid(400, "model is required")
        if name not in self._names:
            raise _Invalid(404, f"model {json.dumps(str(name))} not found")
        return body

    def _sampling(self, body: dict[str, Any]) -> dict[str, Any]:
        stop = body.get("stop") or []
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _Invalid(400, "stop must be a string or a list of strings")
        try:
            limit = body.get("max_completion_tokens", body.get("max_tokens"))
            seed = body.get("seed")
            return {
                "max_tokens": self._default_num_predict if limit is None else int(limit),
                "temperature": float(body.get("temperature", 1.0)),
                "top_p": float(body.get("top_p", 1.0)),
                "seed": None if seed is None else int(seed),
                "stop": stop,
                "presence_penalty": float(body.get("presence_penalty", 0.0)),
                "frequency_penalty": float(body.get("frequency_penalty", 0.0)),
            }
        except (TypeError, ValueError) as exc:
            raise _Invalid(400, f"invalid parameter value: {exc}") from None


def _event(chunk: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"
