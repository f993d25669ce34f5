"""InferenceLinkService.Serve: the stream a node holds open to serve its models
(SPEC §7.12). Beside the dispatch stream, never in it: job dispatch is untouched."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from cynode.controlplane.v1 import inference_pb2, inference_pb2_grpc
from cynode.orchestrator.controlplane.tokens import require_node
from cynode.orchestrator.inference.links import CallFailed, LinkRegistry, NodeLink

log = logging.getLogger(__name__)


class InferenceLinkServicer(inference_pb2_grpc.InferenceLinkServiceServicer):
    def __init__(
        self, links: LinkRegistry, jwt_secret: str, allowed_models: tuple[str, ...] = ()
    ) -> None:
        self._links = links
        self._secret = jwt_secret
        self._allowed = frozenset(allowed_models)

    async def Serve(  # type: ignore[override]
        self,
        request_iterator: AsyncIterator[inference_pb2.ServeRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[inference_pb2.ServeResponse]:
        claims = await require_node(context, self._secret)
        try:
            first = await anext(request_iterator)
        except StopAsyncIteration:
            return
        if first.WhichOneof("msg") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "first message must be hello")
        if first.hello.node_slug not in ("", claims.slug):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "node_slug is not this node's")
        link = NodeLink(claims.node_id, claims.slug, frozenset())
        self._learn(link, first.hello)
        old = self._links.add(link)
        if old is not None:
            old.close()
        log.info(
            "inference link of %s open: %d model(s), %d at once",
            claims.slug,
            len(link.models),
            link.capacity,
        )
        reader = asyncio.create_task(self._read(link, request_iterator))
        try:
            yield inference_pb2.ServeResponse(
                hello_ack=inference_pb2.LinkHelloAck(node_id=claims.node_id)
            )
            while out := await link.take():
                for msg in out:
                    yield msg
        finally:
            reader.cancel()
            link.close()
            self._links.remove(link)
            log.info("inference link of %s closed", claims.slug)

    def _learn(self, link: NodeLink, hello: inference_pb2.LinkHello) -> None:
        caps = hello.inference
        models = frozenset(caps.models)
        if self._allowed:
            # The orchestrator's allowed_models narrow what any node may serve.
            models &= self._allowed
        link.models = models
        link.capacity = max(1, caps.max_concurrency)

    async def _read(
        self, link: NodeLink, requests: AsyncIterator[inference_pb2.ServeRequest]
    ) -> None:
        try:
            async for req in requests:
                kind = req.WhichOneof("msg")
                if kind == "chunk":
                    link.deliver(req.chunk.call_id, req.chunk.chunk)
                elif kind == "embeddings":
                    link.deliver(req.embeddings.call_id, req.embeddings.result)
                elif kind == "call_failed":
                    f = req.call_failed
                    link.deliver(f.call_id, CallFailed(f.kind, f.message))
                elif kind == "hello":
                    # What the node serves changed (its allowed_models); calls go on.
                    self._learn(link, req.hello)
                    self._links.changed()
                else:
                    log.debug("node %s sent %s mid-stream; ignored", link.slug, kind)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the stream broke; the handler's cleanup follows
            log.debug("inference link of %s ended: %s", link.slug, exc)
        finally:
            link.close()
