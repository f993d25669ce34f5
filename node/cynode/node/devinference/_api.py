"""The Ollama HTTP API over one DevModel: /api/generate, /api/chat, /api/embed,
/api/embeddings, /api/tags, /api/show, /api/ps, /api/version and ``/``.

Generation runs on the model thread (see ``_worker``), one request at a time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from aiohttp import web

from cynode.node.devinference._model import (
    DEFAULT_NUM_PREDICT,
    BadRequest,
    DevModel,
    Done,
    Event,
    Options,
    Piece,
    rfc3339_now,
)
from cynode.node.devinference._openai import OpenAIAPI
from cynode.node.devinference._worker import ModelWorker

log = logging.getLogger("cynode.node.devinference")

VERSION = "0.6.8-cynode-dev"
_ROLES = frozenset({"system", "user", "assistant", "tool"})
T = TypeVar("T")

Shape = Callable[[str, Done | None], dict[str, Any]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class _Refusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class OllamaAPI:
    def __init__(
        self,
        model: DevModel,
        worker: ModelWorker,
        *,
        default_num_predict: int = DEFAULT_NUM_PREDICT,
    ) -> None:
        self.model = model
        self.worker = worker
        self._default_num_predict = default_num_predict
        base = model.info.name.split(":", 1)[0]
        self._names = {model.info.name, base, f"{base}:latest"}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._root)  # aiohttp adds HEAD for GET routes
        app.router.add_get("/api/version", self._version)
        app.router.add_get("/api/tags", self._tags)
        app.router.add_get("/api/ps", self._ps)
        app.router.add_post("/api/show", self._show)
        app.router.add_post("/api/generate", self._generate)
        app.router.add_post("/api/chat", self._chat)
        app.router.add_post("/api/embed", self._embed)
        app.router.add_post("/api/embeddings", self._embeddings)
        OpenAIAPI(
            self.model, self.worker, self._names, default_num_predict=self._default_num_predict
        ).add_routes(app)
        return app

    # -- small endpoints -------------------------------------------------------------

    async def _root(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": VERSION})

    async def _tags(self, request: web.Request) -> web.Response:
        return web.json_response({"models": [self.model.info.tag()]})

    async def _ps(self, request: web.Request) -> web.Response:
        entry = dict(self.model.info.tag(), expires_at="0001-01-01T00:00:00Z", size_vram=0)
        return web.json_response({"models": [entry]})

    async def _show(self, request: web.Request) -> web.Response:
        try:
            body = await self._body(request)
            self._check_model(body.get("model") or body.get("name"))
        except _Refusal as refusal:
            return _error(refusal.status, str(refusal))
        return web.json_response(self.model.info.show())

    # -- generation ------------------------------------------------------------------

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await self._body(request)
            name = self._check_model(body.get("model"))
            prompt = body.get("prompt", "")
            system = body.get("system")
            if not isinstance(prompt, str) or not isinstance(system, str | None):
                raise _Refusal(400, "prompt and system must be strings")
            options = self._options(body)
        except _Refusal as refusal:
            return _error(refusal.status, str(refusal))

        def shape(text: str, done: Done | None) -> dict[str, Any]:
            frame = {"model": name, "created_at": rfc3339_now(), "response": text}
            return _finish(frame, done)

        if not prompt:
            # Ollama answers an empty prompt by loading the model and saying so.
            return web.json_response({**shape("", None), "done": True, "done_reason": "load"})
        work: Callable[[threading.Event], Iterator[Event]]
        if body.get("raw"):
            work = lambda cancel: self.model.complete(prompt, options, cancel)  # noqa: E731
        else:
            messages = [{"role": "system", "content": system}] if system else []
            messages.append({"role": "user", "content": prompt})
            work = lambda cancel: self.model.chat(messages, options, cancel)  # noqa: E731
        return await self._respond(request, work, shape, body.get("stream", True) is not False)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await self._body(request)
            name = self._check_model(body.get("model"))
            messages = _messages(body.get("messages"))
            options = self._options(body)
        except _Refusal as refusal:
            return _error(refusal.status, str(refusal))

        def shape(text: str, done: Done | None) -> dict[str, Any]:
            frame = {
                "model": name,
                "created_at": rfc3339_now(),
                "message": {"role": "assistant", "content": text},
            }
            return _finish(frame, done)

        if not messages:
            return web.json_response({**shape("", None), "done": True, "done_reason": "load"})
        work = lambda cancel: self.model.chat(messages, options, cancel)  # noqa: E731
        return await self._respond(request, work, shape, body.get("stream", True) is not False)

    async def _respond(
        self,
        request: web.Request,
        work: Callable[[threading.Event], Iterator[Event]],
        shape: Shape,
        stream: bool,
    ) -> web.StreamResponse:
        events = self.worker.stream(work)
        async with contextlib.aclosing(events):
            # Wait for the first event before answering, so a request the model refuses
            # (prompt longer than the context, say) still gets a proper status code.
            try:
                item = await anext(events)
            except BadRequest as exc:
                return _error(400, str(exc))
            except Exception as exc:
                log.exception("generation failed before its first token")
                return _error(500, f"generation failed: {type(exc).__name__}")
            if not stream:
                text: list[str] = []
                while isinstance(item, Piece):
                    text.append(item.text)
                    item = await anext(events)
                return web.json_response(shape("".join(text), item))
            response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
            await response.prepare(request)
            try:
                while isinstance(item, Piece):
                    await response.write(_line(shape(item.text, None)))
                    item = await anext(events)
                await response.write(_line(shape("", item)))
                await response.write_eof()
            except ConnectionError:
                log.info("client left mid-generation; stopping it")
            except Exception as exc:  # past the status line, Ollama reports errors inline
                log.warning("generation failed: %s", exc)
                with contextlib.suppress(ConnectionError):
                    await response.write(_line({"error": str(exc)}))
            return response

    # -- embeddings ------------------------------------------------------------------

    async def _embed(self, request: web.Request) -> web.Response:
        try:
            body = await self._body(request)
            name = self._check_model(body.get("model"))
            raw = body.get("input", [])
            inputs = [raw] if isinstance(raw, str) else raw
            if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
                raise _Refusal(400, "input must be a string or a list of strings")
            truncate = body.get("truncate", True) is not False
            started = time.monotonic_ns()
            embed = lambda batch: self.model.embed(batch, truncate)  # noqa: E731
            vectors, tokens = await self._on_model(embed, inputs) if inputs else ([], 0)
        except _Refusal as refusal:
            return _error(refusal.status, str(refusal))
        return web.json_response(
            {
                "model": name,
                "embeddings": vectors,
                "total_duration": time.monotonic_ns() - started,
                "load_duration": 0,
                "prompt_eval_count": tokens,
            }
        )

    async def _embeddings(self, request: web.Request) -> web.Response:
        """The older single-prompt endpoint: ``{"prompt": ...}`` → ``{"embedding": [...]}``."""
        try:
            body = await self._body(request)
            self._check_model(body.get("model"))
            prompt = body.get("prompt", "")
            if not isinstance(prompt, str):
                raise _Refusal(400, "prompt must be a string")
            vectors, _ = await self._on_model(self.model.embed, [prompt]) if prompt else ([], 0)
        except _Refusal as refusal:
            return _error(refusal.status, str(refusal))
        return web.json_response({"embedding": vectors[0] if vectors else []})

    async def _on_model(self, fn: Callable[[list[str]], T], arg: list[str]) -> T:
        try:
            return await self.worker.call(lambda: fn(arg))
        except BadRequest as exc:
            raise _Refusal(400, str(exc)) from None

    # -- request parsing -------------------------------------------------------------

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json(loads=json.loads)
        except ValueError:
            raise _Refusal(400, "request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise _Refusal(400, "request body must be a JSON object")
        return body

    def _check_model(self, name: object) -> str:
        if not name:
            raise _Refusal(400, "model is required")
        if not isinstance(name, str) or name not in self._names:
            raise _Refusal(404, f"model {json.dumps(str(name))} not found, try pulling it first")
        return name

    def _options(self, body: dict[str, Any]) -> Options:
        try:
            return Options.parse(body.get("options"), self._default_num_predict)
        except BadRequest as exc:
            raise _Refusal(400, str(exc)) from None


def _messages(raw: object) -> list[dict[str, str]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _Refusal(400, "messages must be a list")
    messages: list[dict[str, str]] = []
    for item in raw:
        if not isinstance(item, dict):
            raise _Refusal(400, "each message must be an object")
        role, content = item.get("role"), item.get("content", "")
        if role not in _ROLES or not isinstance(content, str):
            raise _Refusal(400, "each message needs a known role and string content")
        messages.append({"role": role, "content": content})
    return messages


def _finish(frame: dict[str, Any], done: Done | None) -> dict[str, Any]:
    if done is None:
        frame["done"] = False
        return frame
    frame["done"] = True
    frame.update(done.stats())
    return frame


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode() + b"\n"
