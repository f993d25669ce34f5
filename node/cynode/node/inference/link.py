"""The node's end of InferenceLinkService.Serve (SPEC §7.12): a stream the node opens to
the control plane with its JWT, beside the dispatch stream, over which the gateway's
chat and embeddings calls arrive. Each call goes through the node's inference relay (the
proxy's policy: allowed paths, timeout, no credentials) to its Ollama, and the answer
goes back up piece by piece as the model makes it. The node opens no port. The relay
runs in this process, so a call goes through its policy without its socket
(`InferenceRelay.call`; docs/openai-door.md says what that saves).

Calls the node's `allowed_models` do not name are refused here too, not only left out
of what the node announces. The stream is reopened with backoff, like dispatch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

import grpc

from cynode.controlplane.v1 import inference_pb2, inference_pb2_grpc, nodes_pb2
from cynode.inference.v1 import chat_pb2
from cynode.proxy import Answer, UpstreamError

from ..backoff import Backoff
from ..dispatch import Auth, StreamClosed
from .relay import InferenceRelay

log = logging.getLogger(__name__)

_EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]
# How long a finished answer's body may take to end before its connection is dropped.
DRAIN_S = 2.0
# The longest NDJSON line read; Ollama's are a token each.
LINE_LIMIT = 1024 * 1024
_JSON = (("Content-Type", "application/json"),)


def allowed(model: str, allowed_models: tuple[str, ...]) -> bool:
    return not allowed_models or model in allowed_models


def ollama_chat_body(chat: chat_pb2.ChatRequest) -> dict[str, Any]:
    """A ChatRequest as Ollama's /api/chat body (streamed)."""
    options: dict[str, Any] = {}
    o = chat.options
    if o.max_tokens > 0:
        options["num_predict"] = o.max_tokens
    if o.HasField("temperature"):
        options["temperature"] = o.temperature
    if o.HasField("top_p"):
        options["top_p"] = o.top_p
    if o.stop:
        options["stop"] = list(o.stop)
    if o.HasField("seed"):
        options["seed"] = o.seed
    return {
        "model": chat.model,
        "messages": [{"role": m.role, "content": m.content} for m in chat.messages],
        "stream": True,
        "options": options,
    }


class _Failed(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _failure(status: int, text: str) -> _Failed:
    try:
        message = str(json.loads(text).get("error") or text)
    except (ValueError, AttributeError):
        message = text
    kind = {404: "not_found", 400: "bad_request", 403: "refused"}.get(status, "unavailable")
    return _Failed(kind, f"model server answered {status}: {message[:300]}")


class _Lines:
    """Splits a streamed body into its lines, handing each whole one to `on_line`."""

    def __init__(self, on_line: Callable[[bytes], None]) -> None:
        self._on_line = on_line
        self._rest = b""

    async def write(self, data: bytes) -> None:
        if b"\n" not in data:
            self._rest += data
            if len(self._rest) > LINE_LIMIT:
                raise _Failed("unavailable", "model server sent an over-long line")
            return
        lines = (self._rest + data).split(b"\n")
        self._rest = lines.pop()
        for line in lines:
            self._on_line(line)
        if len(self._rest) > LINE_LIMIT:
            raise _Failed("unavailable", "model server sent an over-long line")

    def end(self) -> None:
        if self._rest:
            self._on_line(self._rest)
            self._rest = b""


class InferenceLink:
    def __init__(
        self,
        *,
        node_slug: str,
        channel: grpc.aio.Channel,
        auth: Auth,
        relay: Callable[[], InferenceRelay | None],
        capability: Callable[[], nodes_pb2.InferenceCapability],
        allowed_models: Callable[[], tuple[str, ...]],
        backoff: Backoff | None = None,
        timeout_s: float = 150.0,
    ) -> None:
        self.node_slug = node_slug
        self._stub = inference_pb2_grpc.InferenceLinkServiceStub(channel)  # type: ignore[no-untyped-call]
        self._auth = auth
        self._relay = relay
        self._capability = capability
        self._allowed_models = allowed_models
        self.backoff = backoff or Backoff()
        self._timeout_s = timeout_s
        self.connected = asyncio.Event()
        self.connections = 0
        self._calls: dict[str, asyncio.Task[None]] = {}
        self._outbox: asyncio.Queue[inference_pb2.ServeRequest] | None = None
        self._current: asyncio.Task[None] | None = None
        self._stopping = False

    # -- life -------------------------------------------------------------------------

    async def run(self) -> None:
        """Keeps the link open until `stop()`."""
        while not self._stopping:
            self._current = asyncio.create_task(self._connect_once())
            try:
                await self._current
                detail = "closed by the server"
            except grpc.aio.AioRpcError as exc:
                detail = f"{exc.code().name}: {exc.details() or ''}"
                if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                    self._auth.invalidate()
            except Exception as exc:
                detail = f"{type(exc).__name__}: {exc}"
            self.connected.clear()
            if self._stopping:
                break
            delay = self.backoff.next_delay()
            log.warning("inference link %s; reconnecting in %.1fs", detail, delay)
            await asyncio.sleep(delay)

    def announce(self) -> None:
        """Says again what the node serves, on the open stream (calls under way go on);
        without a stream the next one's hello says it."""
        self._send(inference_pb2.ServeRequest(hello=self.hello()))

    async def stop(self) -> None:
        self._stopping = True
        if self._current is not None:
            self._current.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._current

    # -- one stream -------------------------------------------------------------------

    def hello(self) -> inference_pb2.LinkHello:
        caps = nodes_pb2.InferenceCapability()
        caps.CopyFrom(self._capability())
        permitted = self._allowed_models()
        kept = [m for m in caps.models if allowed(m, permitted)]
        del caps.models[:]
        caps.models.extend(kept)
        return inference_pb2.LinkHello(node_slug=self.node_slug, inference=caps)

    async def _connect_once(self) -> None:
        call = self._stub.Serve(metadata=await self._auth.metadata())
        outbox: asyncio.Queue[inference_pb2.ServeRequest] = asyncio.Queue()
        writer: asyncio.Task[None] | None = None
        try:
            await call.write(inference_pb2.ServeRequest(hello=self.hello()))
            first = await call.read()
            if not isinstance(first, inference_pb2.ServeResponse) or not first.HasField(
                "hello_ack"
            ):
                raise StreamClosed("the server did not answer hello with an ack")
            self._outbox = outbox
            self.connections += 1
            self.connected.set()
            self.backoff.reset()
            writer = asyncio.create_task(self._write(call, outbox))
            while True:
                msg = await call.read()
                if msg is _EOF or msg is None:
                    return
                assert isinstance(msg, inference_pb2.ServeResponse)
                self._handle(msg)
        finally:
            self._outbox = None
            for task in self._calls.values():
                task.cancel()
            self._calls.clear()
            if writer is not None:
                writer.cancel()
            call.cancel()

    async def _write(self, call: Any, outbox: asyncio.Queue[inference_pb2.ServeRequest]) -> None:
        while True:
            await call.write(await outbox.get())

    def _send(self, msg: inference_pb2.ServeRequest) -> None:
        if self._outbox is not None:
            self._outbox.put_nowait(msg)

    def _handle(self, msg: inference_pb2.ServeResponse) -> None:
        kind = msg.WhichOneof("msg")
        if kind == "chat":
            self._start(msg.chat.call_id, self._chat(msg.chat.call_id, msg.chat.chat))
        elif kind == "embeddings":
            call = msg.embeddings
            self._start(call.call_id, self._embed(call.call_id, call.embeddings))
        elif kind == "cancel":
            task = self._calls.pop(msg.cancel.call_id, None)
            if task is not None:
                task.cancel()
        else:
            log.debug("inference link: %s ignored", kind)

    def _start(self, call_id: str, work: Any) -> None:
        async def guarded() -> None:
            try:
                await work
            except _Failed as exc:
                self._fail(call_id, exc.kind, str(exc))
            except (UpstreamError, TimeoutError) as exc:
                self._fail(
                    call_id, "unavailable", f"model server unreachable: {type(exc).__name__}"
                )
            except (ValueError, TypeError, AttributeError, KeyError) as exc:
                # An answer that is not Ollama's JSON: the call must still end (the door
                # waits for a chunk or a failure), never vanish with its task.
                log.warning("inference call %s: unreadable model answer: %r", call_id, exc)
                self._fail(
                    call_id,
                    "unavailable",
                    f"model server answered unreadably: {type(exc).__name__}",
                )
            finally:
                self._calls.pop(call_id, None)

        self._calls[call_id] = asyncio.create_task(guarded())

    def _fail(self, call_id: str, kind: str, message: str) -> None:
        self._send(
            inference_pb2.ServeRequest(
                call_failed=inference_pb2.CallFailed(call_id=call_id, kind=kind, message=message)
            )
        )

    def _call(
        self, path: str, body: dict[str, Any]
    ) -> contextlib.AbstractAsyncContextManager[Answer]:
        """POST `body` through the relay: its policy and its upstream connections, in
        this process (SPEC §7.12)."""
        relay = self._relay()
        if relay is None:
            raise _Failed("unavailable", "the node's inference relay is not running")
        return relay.call(
            "POST", path, json.dumps(body).encode(), _JSON, head_timeout=self._timeout_s
        )

    def _check(self, model: str) -> None:
        if not allowed(model, self._allowed_models()):
            raise _Failed("refused", f"model {model!r} is not in this node's allowed_models")

    async def _chat(self, call_id: str, chat: chat_pb2.ChatRequest) -> None:
        self._check(chat.model)
        finished = False

        def on_line(raw: bytes) -> None:
            nonlocal finished
            line = raw.strip()
            if not line or finished:
                return
            frame = json.loads(line)
            if "error" in frame:
                raise _Failed("unavailable", f"model server: {str(frame['error'])[:300]}")
            text = str((frame.get("message") or {}).get("content") or "")
            chunk = chat_pb2.ChatChunk(content=text)
            if frame.get("done"):
                chunk.finish_reason = "length" if frame.get("done_reason") == "length" else "stop"
                chunk.usage.prompt_tokens = int(frame.get("prompt_eval_count") or 0)
                chunk.usage.completion_tokens = int(frame.get("eval_count") or 0)
                finished = True
                # The rest of the body (its last chunk) may take DRAIN_S before the
                # connection is dropped rather than kept for the next call.
                deadline.reschedule(asyncio.get_running_loop().time() + DRAIN_S)
            elif not text:
                return
            self._send(
                inference_pb2.ServeRequest(
                    chunk=inference_pb2.CallChunk(call_id=call_id, chunk=chunk)
                )
            )

        async with self._call("/api/chat", ollama_chat_body(chat)) as answer:
            if answer.status != 200:
                raise _failure(answer.status, (await answer.read()).decode(errors="replace"))
            lines = _Lines(on_line)
            try:
                async with asyncio.timeout(None) as deadline:
                    await answer.stream(lines.write)
                    lines.end()
            except TimeoutError:
                if not finished:
                    raise
        if not finished:
            raise _Failed("unavailable", "the model server ended the answer without finishing it")

    async def _embed(self, call_id: str, request: chat_pb2.EmbeddingsRequest) -> None:
        self._check(request.model)
        async with self._call(
            "/api/embed", {"model": request.model, "input": list(request.input)}
        ) as answer:
            text = (await answer.read()).decode(errors="replace")
        if answer.status != 200:
            raise _failure(answer.status, text)
        body = json.loads(text)
        result = chat_pb2.EmbeddingsResult()
        for vector in body.get("embeddings", []):
            result.data.add(values=[float(v) for v in vector])
        result.usage.prompt_tokens = int(body.get("prompt_eval_count") or 0)
        self._send(
            inference_pb2.ServeRequest(
                embeddings=inference_pb2.CallEmbeddings(call_id=call_id, result=result)
            )
        )
