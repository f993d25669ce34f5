"""From a user's request to a node's answer (SPEC §10.3): admission (the model exists,
the user is under their limit), the fair queue across users, placement on the least
busy node that serves the model, one retry elsewhere when a node is lost before its
first token, and the end of the stream with an error when it is lost after."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

from cynode.controlplane.v1 import inference_pb2
from cynode.inference.v1 import chat_pb2
from cynode.orchestrator.inference.links import CallFailed, LinkLost, LinkRegistry, NodeLink

# Nodes a request is tried on when each is lost before it answered anything.
MAX_ATTEMPTS = 3
# How long a retry waits for a node that serves the model when none does right now
# (one reconnecting, say), rather than the whole queue wait.
RETRY_GRACE_S = 10.0


class InferenceError(Exception):
    """A request the door answers with an error; `status` is its HTTP status."""

    status = 500
    code = "internal_error"
    kind = "api_error"


class NoNode(InferenceError):
    status = 503
    code = "no_node_available"
    kind = "service_unavailable"


class UnknownModel(InferenceError):
    status = 404
    code = "model_not_found"
    kind = "invalid_request_error"


class OverLimit(InferenceError):
    status = 429
    code = "rate_limit_exceeded"
    kind = "rate_limit_error"


class BadInferenceRequest(InferenceError):
    status = 400
    code = "invalid_request"
    kind = "invalid_request_error"


class Interrupted(InferenceError):
    """The node was lost after the answer had begun."""

    status = 502
    code = "node_lost"
    kind = "api_error"


@dataclass(eq=False)
class _Waiter:
    user_id: str
    model: str
    future: asyncio.Future[NodeLink] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class FairQueue:
    """Requests waiting for a free node slot, served user by user: the next slot goes
    to the waiting user served longest ago (never served first), so one user's many
    requests cannot starve another's one (each waits at most one turn per other user)."""

    def __init__(self, links: LinkRegistry) -> None:
        self._links = links
        self._waiting: dict[str, deque[_Waiter]] = {}
        self._served: dict[str, int] = {}
        self._turn = 0

    def __len__(self) -> int:
        return sum(len(q) for q in self._waiting.values())

    async def acquire(self, user_id: str, model: str, wait_s: float) -> NodeLink:
        """A slot on a link serving `model` (counted in its `active`); TimeoutError after
        `wait_s` seconds without one."""
        waiter = _Waiter(user_id, model)
        self._waiting.setdefault(user_id, deque()).append(waiter)
        self.dispatch()
        if waiter.future.done():
            # Placed at once: no timer and no turns of the loop before the call goes out.
            return waiter.future.result()
        try:
            return await asyncio.wait_for(asyncio.shield(waiter.future), wait_s)
        except BaseException:
            self._forget(waiter)
            if waiter.future.done() and not waiter.future.cancelled():
                self.release(waiter.future.result())
            else:
                waiter.future.cancel()
            raise

    def release(self, link: NodeLink) -> None:
        link.active = max(0, link.active - 1)
        self.dispatch()

    def dispatch(self) -> None:
        """Gives free slots to waiters, user by user, until none can be placed."""
        placed = True
        while placed:
            placed = False
            users = sorted(self._waiting, key=lambda u: self._served.get(u, -1))
            for user in users:
                waiter = self._waiting[user][0]
                link = self._links.place(waiter.model)
                if link is None:
                    continue
                self._forget(waiter)
                link.active += 1
                self._turn += 1
                self._served[user] = self._turn
                waiter.future.set_result(link)
                placed = True
                break

    def _forget(self, waiter: _Waiter) -> None:
        queue = self._waiting.get(waiter.user_id)
        if queue is None:
            return
        with contextlib.suppress(ValueError):
            queue.remove(waiter)
        if not queue:
            del self._waiting[waiter.user_id]


@dataclass
class Outcome:
    """What one finished call reports to usage records and metrics."""

    user_id: str
    model: str
    node_id: str
    kind: str
    prompt_tokens: int
    completion_tokens: int


class Router:
    def __init__(
        self,
        links: LinkRegistry,
        *,
        user_limit: int,
        queue_seconds: float,
        allowed_models: tuple[str, ...] = (),
        on_outcome: Callable[[Outcome], None] = lambda _o: None,
        on_wait: Callable[[float], None] = lambda _s: None,
    ) -> None:
        self.links = links
        self.queue = FairQueue(links)
        links.on_change = self.queue.dispatch
        self.user_limit = user_limit
        self.queue_seconds = queue_seconds
        self.allowed_models = frozenset(allowed_models)
        self._on_outcome = on_outcome
        self._on_wait = on_wait
        self._in_flight: dict[str, int] = {}

    def models(self) -> dict[str, int]:
        return self.links.models()

    def in_flight(self, user_id: str) -> int:
        return self._in_flight.get(user_id, 0)

    def _admit(self, user_id: str, model: str, limit: int | None = None) -> None:
        # `limit`: the user's own (SPEC §10.4), 0 none; None: inference.user_concurrency.
        limit = self.user_limit if limit is None else limit
        if not model:
            raise BadInferenceRequest("model is required")
        if not len(self.links):
            raise NoNode("no node that serves models is connected")
        if not self.links.serves(model):
            raise UnknownModel(f"The model `{model}` does not exist or no node serves it")
        if limit and self._in_flight.get(user_id, 0) >= limit:
            raise OverLimit(f"too many requests in flight for this user (at most {limit})")

    @contextlib.contextmanager
    def _counted(self, user_id: str) -> Iterator[None]:
        self._in_flight[user_id] = self._in_flight.get(user_id, 0) + 1
        try:
            yield
        finally:
            left = self._in_flight[user_id] - 1
            if left:
                self._in_flight[user_id] = left
            else:
                del self._in_flight[user_id]

    async def _slot(self, user_id: str, model: str, retry: bool = False) -> NodeLink:
        wait_s = self.queue_seconds
        if retry and not self.links.serves(model):
            wait_s = min(wait_s, RETRY_GRACE_S)
        started = time.perf_counter()
        try:
            return await self.queue.acquire(user_id, model, wait_s)
        except TimeoutError:
            raise NoNode(f"no node could take the request within {wait_s:g} s") from None
        finally:
            self._on_wait(time.perf_counter() - started)

    async def chat(
        self, user_id: str, request: chat_pb2.ChatRequest, limit: int | None = None
    ) -> AsyncIterator[chat_pb2.ChatChunk]:
        """The answer's pieces in order; the last has finish_reason and usage."""
        self._admit(user_id, request.model, limit)
        with self._counted(user_id):
            for attempt in range(1, MAX_ATTEMPTS + 1):
                link = await self._slot(user_id, request.model, retry=attempt > 1)
                call_id, events = link.open_call()
                link.send(
                    inference_pb2.ServeResponse(
                        chat=inference_pb2.ChatCall(call_id=call_id, chat=request)
                    )
                )
                started = finished = released = False
                try:
                    while not finished:
                        event = await events.get()
                        if isinstance(event, LinkLost):
                            if started:
                                raise Interrupted(str(event)) from None
                            break
                        if isinstance(event, CallFailed):
                            raise _from_node(event)
                        if not isinstance(event, chat_pb2.ChatChunk):
                            continue
                        started = True
                        finished = bool(event.finish_reason)
                        if finished:
                            # The node is done with it: its slot goes to the next
                            # request now, not once this client has read the end.
                            link.end_call(call_id, cancel=False)
                            self.queue.release(link)
                            released = True
                            self._on_outcome(
                                Outcome(
                                    user_id,
                                    request.model,
                                    link.node_id,
                                    "chat",
                                    event.usage.prompt_tokens,
                                    event.usage.completion_tokens,
                                )
                            )
                        yield event
                    if finished:
                        return
                finally:
                    if not released:
                        link.end_call(call_id, cancel=not finished)
                        self.queue.release(link)
                if attempt == MAX_ATTEMPTS:
                    raise NoNode("the nodes serving this model went away before answering")

    async def embeddings(
        self, user_id: str, request: chat_pb2.EmbeddingsRequest, limit: int | None = None
    ) -> chat_pb2.EmbeddingsResult:
        self._admit(user_id, request.model, limit)
        with self._counted(user_id):
            for attempt in range(MAX_ATTEMPTS):
                link = await self._slot(user_id, request.model, retry=attempt > 0)
                call_id, events = link.open_call()
                link.send(
                    inference_pb2.ServeResponse(
                        embeddings=inference_pb2.EmbeddingsCall(call_id=call_id, embeddings=request)
                    )
                )
                done = False
                try:
                    event = await events.get()
                    if isinstance(event, CallFailed):
                        raise _from_node(event)
                    if isinstance(event, chat_pb2.EmbeddingsResult):
                        done = True
                        self._on_outcome(
                            Outcome(
                                user_id,
                                request.model,
                                link.node_id,
                                "embeddings",
                                event.usage.prompt_tokens,
                                0,
                            )
                        )
                        return event
                finally:
                    link.end_call(call_id, cancel=not done)
                    self.queue.release(link)
            raise NoNode("the nodes serving this model went away before answering")


def _from_node(failed: CallFailed) -> InferenceError:
    if failed.kind == "not_found":
        return UnknownModel(str(failed))
    if failed.kind == "refused":
        # allowed_models on the node said no: for this caller the model is not there.
        return UnknownModel(str(failed))
    if failed.kind == "bad_request":
        return BadInferenceRequest(str(failed))
    return NoNode(str(failed))
