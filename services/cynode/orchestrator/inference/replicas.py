"""The door's router across replicas (SPEC §10.3): a request whose model a link of this
replica serves goes to the local router (admission, fair queue, placement, retries) as
before; one whose model only other replicas' links serve is forwarded to one of those
replicas (`forward.Forwarder`), whose router then admits, queues and places it as its
own. A holder lost before the first piece: the request is tried on another holder, or
on a link that appeared here, within the router's retry grace; lost after: the stream
ends with `Interrupted`, as for a node lost mid-answer."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc

from cynode.inference.v1 import chat_pb2
from cynode.orchestrator.inference.directory import LinkDirectory, RemoteLink
from cynode.orchestrator.inference.forward import Forwarder
from cynode.orchestrator.inference.router import (
    MAX_ATTEMPTS,
    RETRY_GRACE_S,
    BadInferenceRequest,
    InferenceError,
    Interrupted,
    NoNode,
    OverLimit,
    Router,
    UnknownModel,
)

T = TypeVar("T")

# How often a retry looks again for a link that serves the model while it waits.
_POLL_S = 0.25


@dataclass(frozen=True)
class Caller:
    """Who asks: the user, their own inference limit (None: the default), the access
    token a forwarded call carries, and whether this call was forwarded to us (then
    only this replica's links serve it)."""

    user_id: str
    limit: int | None = None
    token: str = ""
    forwarded: bool = False


_LOCAL = "local"


class ReplicaRouter:
    def __init__(
        self,
        router: Router,
        directory: LinkDirectory | None = None,
        forwarder: Forwarder | None = None,
        *,
        retry_grace_s: float = RETRY_GRACE_S,
    ) -> None:
        self.router = router
        self.directory = directory
        self.forwarder = forwarder
        self.retry_grace_s = retry_grace_s
        self._turn = itertools.count()

    def models(self) -> dict[str, int]:
        """Every model a link of any replica serves, with how many links serve it."""
        counts = dict(self.router.models())
        if self.directory is not None:
            for model, n in self.directory.models().items():
                counts[model] = counts.get(model, 0) + n
        return dict(sorted(counts.items()))

    def _here(self, caller: Caller, model: str) -> bool:
        return (
            caller.forwarded
            or self.directory is None
            or self.forwarder is None
            or not caller.token
            or self.router.links.serves(model)
        )

    def chat(
        self, caller: Caller, request: chat_pb2.ChatRequest
    ) -> AsyncIterator[chat_pb2.ChatChunk]:
        """The answer's pieces, from a local link or relayed from the holder's."""
        if self._here(caller, request.model):
            return self.router.chat(caller.user_id, request, caller.limit)
        return self._forward_chat(caller, request)

    async def embeddings(
        self, caller: Caller, request: chat_pb2.EmbeddingsRequest
    ) -> chat_pb2.EmbeddingsResult:
        if self._here(caller, request.model):
            return await self.router.embeddings(caller.user_id, request, caller.limit)
        return await self._forward_once(
            caller,
            request.model,
            lambda address: self._forwarder.embeddings(address, caller.token, request),
            lambda: self.router.embeddings(caller.user_id, request, caller.limit),
        )

    @property
    def _forwarder(self) -> Forwarder:
        assert self.forwarder is not None
        return self.forwarder

    @property
    def _directory(self) -> LinkDirectory:
        assert self.directory is not None
        return self.directory

    async def _forward_once(
        self,
        caller: Caller,
        model: str,
        remote: Callable[[str], Awaitable[T]],
        local: Callable[[], Awaitable[T]],
    ) -> T:
        for attempt in range(MAX_ATTEMPTS):
            target = await self._target(model, retry=attempt > 0)
            if target == _LOCAL:
                return await local()
            assert isinstance(target, RemoteLink)
            try:
                return await remote(target.address)
            except grpc.aio.AioRpcError as exc:
                self._failed(target, exc)
        raise NoNode("the replicas holding this model's links went away before answering")

    async def _forward_chat(
        self, caller: Caller, request: chat_pb2.ChatRequest
    ) -> AsyncIterator[chat_pb2.ChatChunk]:
        for attempt in range(MAX_ATTEMPTS):
            target = await self._target(request.model, retry=attempt > 0)
            if target == _LOCAL:
                pieces = self.router.chat(caller.user_id, request, caller.limit)
            else:
                assert isinstance(target, RemoteLink)
                pieces = self._forwarder.chat(target.address, caller.token, request)
            started = False
            try:
                async for chunk in pieces:
                    started = True
                    yield chunk
                return
            except grpc.aio.AioRpcError as exc:
                if started:
                    raise Interrupted(
                        f"the replica relaying this answer went away mid-answer: {exc.details()}"
                    ) from None
                assert isinstance(target, RemoteLink)
                self._failed(target, exc)
            finally:
                await pieces.aclose()  # type: ignore[attr-defined]
        raise NoNode("the replicas holding this model's links went away before answering")

    def _failed(self, target: RemoteLink, exc: grpc.aio.AioRpcError) -> None:
        """A forwarded call that failed before any answer: the holder's refusal is the
        caller's answer; a holder out of reach is skipped and the call tried again."""
        if exc.code() != grpc.StatusCode.UNAVAILABLE:
            raise _from_status(exc) from None
        self._directory.suspect(target.address)

    async def _target(self, model: str, *, retry: bool) -> RemoteLink | str:
        """Where the call goes now: a local link (one appeared), another replica's, or,
        when none serves the model, a wait for one (the retry grace) or the error."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.retry_grace_s if retry else 0.0)
        refreshed = False
        while True:
            if self.router.links.serves(model):
                return _LOCAL
            holders = self._directory.holders(model)
            if holders:
                return holders[next(self._turn) % len(holders)]
            if not refreshed:
                # The snapshot may be a refresh behind a link that just opened elsewhere.
                refreshed = True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._directory.refresh(), 2 * self._directory.refresh_s)
                continue
            if loop.time() >= deadline:
                break
            await asyncio.sleep(_POLL_S)
        if retry:
            raise NoNode("the replicas holding this model's links went away before answering")
        if self._directory.models() or len(self.router.links):
            raise UnknownModel(f"The model `{model}` does not exist or no node serves it")
        raise NoNode("no node that serves models is connected")


def _from_status(exc: grpc.aio.AioRpcError) -> InferenceError:
    """The holder's refusal as the door's own error."""
    message = exc.details() or exc.code().name
    code = exc.code()
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return OverLimit(message)
    if code == grpc.StatusCode.NOT_FOUND:
        return UnknownModel(message)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return BadInferenceRequest(message)
    return NoNode(message)
