"""InferenceService: the models on the connected nodes for gRPC clients, on the same
router (limits, fair queue, placement, usage) as the OpenAI door."""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc

from cynode.gateway.v1 import inference_pb2, inference_pb2_grpc
from cynode.orchestrator.auth.admins import Authenticate
from cynode.orchestrator.errors import metadata_value
from cynode.orchestrator.inference.forward import FORWARDED
from cynode.orchestrator.inference.redact import redact
from cynode.orchestrator.inference.replicas import Caller, ReplicaRouter
from cynode.orchestrator.inference.router import InferenceError

_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}


def status_of(exc: InferenceError) -> grpc.StatusCode:
    return _CODES.get(exc.status, grpc.StatusCode.UNAVAILABLE)


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, router: ReplicaRouter, authenticate: Authenticate) -> None:
        self._router = router
        self._authenticate = authenticate

    async def _user(self, context: grpc.aio.ServicerContext[Any, Any]) -> Caller:
        principal: Any = self._authenticate(context)
        if inspect.isawaitable(principal):
            principal = await principal
        _scheme, _, token = (metadata_value(context, "authorization") or "").partition(" ")
        return Caller(
            str(principal.user_id),
            getattr(principal, "max_inference_requests", None),
            token.strip(),
            # Another replica forwarded it here: only this replica's links serve it.
            forwarded=metadata_value(context, FORWARDED) is not None,
        )

    async def ListModels(
        self, request: inference_pb2.ListModelsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> inference_pb2.ListModelsResponse:
        await self._user(context)
        return inference_pb2.ListModelsResponse(
            models=[
                inference_pb2.Model(id=name, nodes=n) for name, n in self._router.models().items()
            ]
        )

    async def ChatCompletion(  # type: ignore[override]
        self,
        request: inference_pb2.ChatCompletionRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[inference_pb2.ChatCompletionResponse]:
        caller = await self._user(context)
        chat = request.chat
        found: Counter[str] = Counter()
        for message in chat.messages:
            message.content = redact(message.content, found)
        pieces = self._router.chat(caller, chat)
        try:
            async for chunk in pieces:
                yield inference_pb2.ChatCompletionResponse(chunk=chunk)
        except InferenceError as exc:
            await context.abort(status_of(exc), str(exc))
        finally:
            await pieces.aclose()  # type: ignore[attr-defined]

    async def CreateEmbeddings(
        self,
        request: inference_pb2.CreateEmbeddingsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> inference_pb2.CreateEmbeddingsResponse:
        caller = await self._user(context)
        embeddings = request.embeddings
        cleaned = [redact(text) for text in embeddings.input]
        del embeddings.input[:]
        embeddings.input.extend(cleaned)
        try:
            result = await self._router.embeddings(caller, embeddings)
        except InferenceError as exc:
            await context.abort(status_of(exc), str(exc))
        return inference_pb2.CreateEmbeddingsResponse(result=result)
