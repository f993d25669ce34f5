"""Calls forwarded to the replica that holds a node's link (SPEC §10.3): the holder's own
InferenceService on its gateway gRPC port, with the caller's own access token (so the
holder authenticates the user as for any call; no internal door is opened) and the
`x-cynode-forwarded` header, which makes the holder serve the call from its own links
only (never forward it again). A chat's pieces are relayed one by one as they come."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from cynode.gateway.v1 import inference_pb2, inference_pb2_grpc
from cynode.inference.v1 import chat_pb2
from cynode.orchestrator.grpc_server import DEFAULT_MAX_MESSAGE_BYTES

FORWARDED = "x-cynode-forwarded"

_OPTIONS = [
    ("grpc.max_send_message_length", DEFAULT_MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", DEFAULT_MAX_MESSAGE_BYTES),
    # A holder that vanished without a reset (host gone, cable cut) is noticed within
    # about 15 s; one whose process died resets the connection and is noticed at once.
    # 10 s is the shortest ping interval the gateway's server accepts.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
]


def root_certificates(tls_cert: Path | None) -> bytes | None:
    """The CA to check other replicas' certificates with: `ca.pem` beside this
    replica's own certificate (what `certs init` writes), else the system's roots."""
    if tls_cert is None:
        return None
    ca = tls_cert.parent / "ca.pem"
    return ca.read_bytes() if ca.is_file() else None


class Forwarder:
    """One channel per holder address, kept for later calls."""

    def __init__(self, replica_id: str, *, tls: bool = False, root_ca: bytes | None = None):
        self.replica_id = replica_id
        self._tls = tls
        self._root_ca = root_ca
        self._stubs: dict[
            str, tuple[grpc.aio.Channel, inference_pb2_grpc.InferenceServiceStub]
        ] = {}

    def _stub(self, address: str) -> inference_pb2_grpc.InferenceServiceStub:
        held = self._stubs.get(address)
        if held is None:
            if self._tls:
                creds = grpc.ssl_channel_credentials(root_certificates=self._root_ca)
                channel = grpc.aio.secure_channel(address, creds, options=_OPTIONS)
            else:
                channel = grpc.aio.insecure_channel(address, options=_OPTIONS)
            stub = inference_pb2_grpc.InferenceServiceStub(channel)  # type: ignore[no-untyped-call]
            held = self._stubs[address] = (channel, stub)
        return held[1]

    def _metadata(self, token: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {token}"), (FORWARDED, self.replica_id))

    async def chat(
        self, address: str, token: str, request: chat_pb2.ChatRequest
    ) -> AsyncIterator[chat_pb2.ChatChunk]:
        """The holder's pieces; grpc.aio.AioRpcError when the call fails. Leaving early
        cancels the call (the holder cancels it on the node)."""
        call = self._stub(address).ChatCompletion(
            inference_pb2.ChatCompletionRequest(chat=request), metadata=self._metadata(token)
        )
        try:
            async for response in call:
                yield response.chunk
        finally:
            call.cancel()

    async def embeddings(
        self, address: str, token: str, request: chat_pb2.EmbeddingsRequest
    ) -> chat_pb2.EmbeddingsResult:
        response: inference_pb2.CreateEmbeddingsResponse = await self._stub(
            address
        ).CreateEmbeddings(
            inference_pb2.CreateEmbeddingsRequest(embeddings=request),
            metadata=self._metadata(token),
        )
        return response.result

    async def close(self) -> None:
        stubs, self._stubs = self._stubs, {}
        for channel, _stub in stubs.values():
            with contextlib.suppress(Exception):
                await channel.close(None)
