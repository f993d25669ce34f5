"""A servicer for the shim's test-only contract (cynode.shimtest.v1).

It is written exactly like a production servicer (grpc.aio style), so the same
object is exercised through real gRPC and through the REST shim.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from cynode.shimtest.v1 import shimtest_pb2, shimtest_pb2_grpc

SECRET = "s3cr3t-traceback-marker"
# Keeps property tests from asking for a billion messages.
MAX_STREAM = 50


class EchoServicer(shimtest_pb2_grpc.EchoServiceServicer):
    def __init__(self) -> None:
        self.seen_metadata: tuple[tuple[str, str], ...] = ()
        self.seen_peer = ""
        self.release = asyncio.Event()
        self.stream_cancelled = asyncio.Event()
        self.stream_started = asyncio.Event()

    async def GetThing(
        self, request: shimtest_pb2.GetThingRequest, context: Any
    ) -> shimtest_pb2.GetThingResponse:
        self.seen_metadata = tuple(context.invocation_metadata())
        self.seen_peer = context.peer()
        if request.thing_id == "missing":
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no thing {request.thing_id}")
        return shimtest_pb2.GetThingResponse(
            thing=shimtest_pb2.Thing(thing_id=request.thing_id),
            shelf=request.shelf,
            limit=request.limit,
            tags=request.tags,
            verbose=request.verbose,
            color=request.color,
        )

    async def CreateThing(
        self, request: shimtest_pb2.CreateThingRequest, context: Any
    ) -> shimtest_pb2.CreateThingResponse:
        if len(request.thing.name) > 64:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "name over 64 bytes",
                trailing_metadata=(("x-http-status", "413"),),
            )
        context.set_trailing_metadata((("x-http-status", "201"),))
        return shimtest_pb2.CreateThingResponse(shelf=request.shelf, thing=request.thing)

    async def UpdateThing(
        self, request: shimtest_pb2.UpdateThingRequest, context: Any
    ) -> shimtest_pb2.UpdateThingResponse:
        return shimtest_pb2.UpdateThingResponse(thing=request.thing, note=request.note)

    async def DeleteThing(
        self, request: shimtest_pb2.DeleteThingRequest, context: Any
    ) -> shimtest_pb2.DeleteThingResponse:
        context.set_trailing_metadata((("x-http-status", "204"),))
        return shimtest_pb2.DeleteThingResponse()

    async def Fail(
        self, request: shimtest_pb2.FailRequest, context: Any
    ) -> shimtest_pb2.FailResponse:
        """`code` picks the failure: a StatusCode name, or one of the special words."""
        if request.code == "EXCEPTION":
            raise RuntimeError(f"boom {SECRET}")
        if request.code == "RETRY":
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "slow down",
                trailing_metadata=(("retry-after", "7"),),
            )
        if request.code == "SET_CODE":
            context.set_code(grpc.StatusCode.FAILED_PRECONDITION)
            context.set_details(request.message)
            return shimtest_pb2.FailResponse()
        if request.code == "WRONG_TYPE":
            return shimtest_pb2.Thing()  # type: ignore[return-value]
        if request.code == "OK" or not request.code:
            return shimtest_pb2.FailResponse()
        code = grpc.StatusCode.__members__.get(request.code, grpc.StatusCode.INVALID_ARGUMENT)
        await context.abort(code, request.message)
        raise AssertionError("abort returned")

    async def StreamThings(
        self, request: shimtest_pb2.StreamThingsRequest, context: Any
    ) -> AsyncIterator[shimtest_pb2.StreamThingsResponse]:
        """`shelf` picks the behaviour (see SPECIAL_SHELVES); any other shelf streams."""
        if request.shelf == "early":
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not your shelf")
        if request.shelf == "crash-early":
            raise RuntimeError(f"boom {SECRET}")
        self.stream_started.set()
        try:
            if request.shelf == "wait-first":
                await self.release.wait()
            for index in range(min(request.count, MAX_STREAM)):
                yield shimtest_pb2.StreamThingsResponse(
                    thing=shimtest_pb2.Thing(thing_id=str(index), name=request.shelf)
                )
                if request.shelf == "wait":
                    await self.release.wait()
            if request.shelf == "abort-late":
                await context.abort(grpc.StatusCode.UNAVAILABLE, "node went away")
            if request.shelf == "crash-late":
                raise RuntimeError(f"boom {SECRET}")
        except asyncio.CancelledError:
            self.stream_cancelled.set()
            raise


SERVICE_NAME = "cynode.shimtest.v1.EchoService"
SPECIAL_SHELVES = frozenset(
    {"early", "crash-early", "abort-late", "crash-late", "wait", "wait-first"}
)
# Fail codes whose REST answer is a 5xx by design.
FAILING_CODES = frozenset(
    {"EXCEPTION", "WRONG_TYPE", "UNKNOWN", "INTERNAL", "DATA_LOSS", "UNIMPLEMENTED"}
    | {"UNAVAILABLE", "DEADLINE_EXCEEDED"}
)
