"""The gRPC server builder, against a real server on 127.0.0.1 and real stubs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from cynode.orchestrator.grpc_server import (
    HideUnexpectedErrors,
    ServingHealth,
    build_grpc_server,
    serve_until_stopped,
    server_options,
)
from cynode.shimtest.v1 import shimtest_pb2, shimtest_pb2_grpc
from tests.orchestrator.rest.echo import SECRET, SERVICE_NAME, EchoServicer


@pytest.fixture
async def channel() -> AsyncIterator[tuple[grpc.aio.Channel, EchoServicer]]:
    echo = EchoServicer()
    server = build_grpc_server(
        [(shimtest_pb2_grpc.add_EchoServiceServicer_to_server, echo)],
        service_names=[SERVICE_NAME],
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
        yield chan, echo
    await server.stop(None)


async def test_health_is_serving_for_the_server_and_each_service(
    channel: tuple[grpc.aio.Channel, EchoServicer],
) -> None:
    stub = health_pb2_grpc.HealthStub(channel[0])
    for name in ("", SERVICE_NAME):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=name))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Check(health_pb2.HealthCheckRequest(service="no.Such"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_the_services(
    channel: tuple[grpc.aio.Channel, EchoServicer],
) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel[0])
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    names: set[str] = set()
    async for reply in stub.ServerReflectionInfo(iter([request])):
        names |= {s.name for s in reply.list_services_response.service}
    assert names == {
        SERVICE_NAME,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    file_request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE_NAME)
    async for reply in stub.ServerReflectionInfo(iter([file_request])):
        assert reply.file_descriptor_response.file_descriptor_proto


async def test_the_shim_servicer_runs_unchanged_on_real_grpc(
    channel: tuple[grpc.aio.Channel, EchoServicer],
) -> None:
    chan, echo = channel
    stub = shimtest_pb2_grpc.EchoServiceStub(chan)  # type: ignore[no-untyped-call]
    reply = await stub.GetThing(
        shimtest_pb2.GetThingRequest(shelf="s", thing_id="t", limit=3),
        metadata=(("authorization", "Bearer x"),),
    )
    assert (reply.shelf, reply.thing.thing_id, reply.limit) == ("s", "t", 3)
    assert ("authorization", "Bearer x") in echo.seen_metadata
    assert echo.seen_peer.startswith("ipv4:127.0.0.1:")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetThing(shimtest_pb2.GetThingRequest(thing_id="missing"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    call = stub.CreateThing(shimtest_pb2.CreateThingRequest(shelf="s"))
    await call
    assert ("x-http-status", "201") in tuple(await call.trailing_metadata() or ())
    things = [
        m.thing.thing_id async for m in stub.StreamThings(shimtest_pb2.StreamThingsRequest(count=3))
    ]
    assert things == ["0", "1", "2"]
    stream = stub.StreamThings(shimtest_pb2.StreamThingsRequest(shelf="abort-late", count=1))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stream:
            pass
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_message_size_limit_is_applied() -> None:
    server = build_grpc_server(
        [(shimtest_pb2_grpc.add_EchoServiceServicer_to_server, EchoServicer())],
        service_names=[SERVICE_NAME],
        max_message_bytes=1024,
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
            stub = shimtest_pb2_grpc.EchoServiceStub(chan)  # type: ignore[no-untyped-call]
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.UpdateThing(shimtest_pb2.UpdateThingRequest(note="x" * 4096))
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        await server.stop(None)


def test_keepalive_options_suit_idle_streams() -> None:
    options = dict(server_options())
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert options["grpc.http2.max_pings_without_data"] == 0
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 10_000
    assert 0 < options["grpc.keepalive_time_ms"] <= 60_000
    assert "grpc.max_connection_age_ms" not in options
    assert "grpc.max_connection_idle_ms" not in options


async def test_serve_until_stopped_drains_and_turns_health_off() -> None:
    health = ServingHealth([SERVICE_NAME])
    server = build_grpc_server([], service_names=[SERVICE_NAME], health=health)
    port = server.add_insecure_port("127.0.0.1:0")
    stop = asyncio.Event()
    task = asyncio.create_task(serve_until_stopped(server, stop, health=health, grace_seconds=1))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
        stub = health_pb2_grpc.HealthStub(chan)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stop.set()
    await asyncio.wait_for(task, 10)

    class Context:
        async def abort(self, *args: Any) -> None:
            raise AssertionError(args)

    after = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), Context())
    assert after.status == health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
async def hiding() -> AsyncIterator[shimtest_pb2_grpc.EchoServiceStub]:
    server = build_grpc_server(
        [(shimtest_pb2_grpc.add_EchoServiceServicer_to_server, EchoServicer())],
        service_names=[SERVICE_NAME],
        interceptors=[HideUnexpectedErrors()],
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
        yield shimtest_pb2_grpc.EchoServiceStub(chan)  # type: ignore[no-untyped-call]
    await server.stop(None)


async def _rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_unexpected_errors_are_internal_without_their_message(
    hiding: shimtest_pb2_grpc.EchoServiceStub, caplog: pytest.LogCaptureFixture
) -> None:
    error = await _rpc_error(hiding.Fail(shimtest_pb2.FailRequest(code="EXCEPTION")))
    assert (error.code(), error.details()) == (grpc.StatusCode.INTERNAL, "internal error")
    assert SECRET in caplog.text  # the cause is logged, for the operator
    for shelf in ("crash-early", "crash-late"):
        stream = hiding.StreamThings(shimtest_pb2.StreamThingsRequest(shelf=shelf, count=2))
        got: list[str] = []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for item in stream:
                got.append(item.thing.thing_id)
        assert caught.value.code() == grpc.StatusCode.INTERNAL, shelf
        assert caught.value.details() == "internal error", shelf
        assert got == ([] if shelf == "crash-early" else ["0", "1"])


async def test_statuses_a_servicer_chose_pass_unchanged(
    hiding: shimtest_pb2_grpc.EchoServiceStub,
) -> None:
    request = shimtest_pb2.FailRequest(code="NOT_FOUND", message="no such thing")
    error = await _rpc_error(hiding.Fail(request))
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, "no such thing")
    assert await hiding.Fail(shimtest_pb2.FailRequest(code="OK")) == shimtest_pb2.FailResponse()
    stream = hiding.StreamThings(shimtest_pb2.StreamThingsRequest(shelf="abort-late", count=1))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stream:
            pass
    assert (caught.value.code(), caught.value.details()) == (
        grpc.StatusCode.UNAVAILABLE,
        "node went away",
    )
    things = hiding.StreamThings(shimtest_pb2.StreamThingsRequest(shelf="s", count=3))
    assert [item.thing.thing_id async for item in things] == ["0", "1", "2"]
