"""The gRPC server of one port: our servicers, plus grpc.health.v1 and reflection.

Keepalive is tuned for the node dispatch stream, which stays open for days and may
carry nothing for hours: the server pings idle connections itself (so NATs and
proxies keep them), lets clients ping every 10 s even without calls, and never ages
a connection out.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection

_log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
HEALTH_SERVICE_NAME = "grpc.health.v1.Health"

Registration = tuple[Callable[[Any, grpc.aio.Server], None], object]


def server_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    """Channel arguments for a server that holds long, mostly idle streams."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # Ping an idle connection every 30 s; drop it when a ping is not answered in 20 s.
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # Keep pinging through hours without data (the default stops after two pings).
        ("grpc.http2.max_pings_without_data", 0),
        # Clients (nodes) may ping every 10 s, with or without calls in flight; this is
        # the receive-side limit (GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS).
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 2),
        # No grpc.max_connection_age_ms / max_connection_idle_ms: a dispatch stream must
        # not be cut just for being old or quiet.
    ]


INTERNAL_DETAIL = "internal error"


@contextlib.asynccontextmanager
async def _internal_on_error(method: str, context: Any) -> AsyncIterator[None]:
    """Around one call (unary or streaming alike): an exception that is not already a
    status is logged and answered INTERNAL "internal error"."""
    try:
        yield
    except grpc.aio.AbortError:
        raise
    except Exception:
        _log.exception("%s failed", method)
        await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_DETAIL)


class HideUnexpectedErrors(grpc.aio.ServerInterceptor):  # type: ignore[misc,type-arg]
    """An exception a servicer did not turn into a status becomes INTERNAL "internal
    error", as the REST shim answers 500 "internal error"; the exception goes to the log.

    Without it grpc answers UNKNOWN with `Unexpected <class ...>: <message>`, and such a
    message (a database error, say) may quote values that must never reach a client.
    Unary and server-streaming methods are wrapped; others pass through unchanged.
    """

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(details)
        if handler is None or handler.request_streaming:
            return handler
        method = details.method
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary_unary(request: Any, context: Any) -> Any:
                async with _internal_on_error(method, context):
                    return await inner(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None and inspect.isasyncgenfunction(handler.unary_stream):
            inner_stream = handler.unary_stream

            async def unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
                async with _internal_on_error(method, context):
                    async for item in inner_stream(request, context):
                        yield item

            return grpc.unary_stream_rpc_method_handler(
                unary_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


class ServingHealth(health_aio.HealthServicer):  # type: ignore[misc]
    """The standard async health servicer, SERVING for the given names from the start.

    The statuses are set without awaiting because nobody can watch them yet; later
    changes go through the inherited `set` and `enter_graceful_shutdown`.
    """

    def __init__(self, service_names: Sequence[str]) -> None:
        super().__init__()
        for name in ("", *service_names):
            self._server_status[name] = health_pb2.HealthCheckResponse.SERVING


def build_grpc_server(
    registrations: Sequence[Registration],
    *,
    service_names: Sequence[str],
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    health: health_aio.HealthServicer | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = (),
) -> grpc.aio.Server:
    """A grpc.aio server with every (add_XServicer_to_server, servicer) pair added,
    health (SERVING for `service_names` and "") and reflection for them.

    Pass your own `health` to flip statuses later; bind ports and start it yourself
    (or use serve_until_stopped).
    """
    server = grpc.aio.server(
        options=server_options(max_message_bytes), interceptors=list(interceptors)
    )
    for add_to_server, servicer in registrations:
        add_to_server(servicer, server)
    health_servicer = health if health is not None else ServingHealth(service_names)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*service_names, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    return server


async def serve_until_stopped(
    server: grpc.aio.Server,
    stop: asyncio.Event,
    *,
    health: health_aio.HealthServicer | None = None,
    grace_seconds: float = 10.0,
) -> None:
    """Starts `server` (ports already added), runs until `stop` is set, then stops it
    gracefully: health turns NOT_SERVING first, so balancers move away, and calls in
    flight get `grace_seconds` to finish before being cancelled."""
    await server.start()
    try:
        await stop.wait()
    finally:
        if health is not None:
            await health.enter_graceful_shutdown()
        await server.stop(grace_seconds)
        _log.info("gRPC server stopped")
