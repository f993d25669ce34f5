"""A small, real gRPC control plane (NodeService + DispatchService) for node tests.

It listens on a real TCP port so the node's client code runs over the wire; the test
drives it: what to answer, when to drop a stream, what it received.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc

from cynode.controlplane.v1 import dispatch_pb2, dispatch_pb2_grpc, nodes_pb2, nodes_pb2_grpc

PSK = "test-psk-0123456789"


@dataclass(eq=False)
class StreamSession:
    hello: dispatch_pb2.Hello | None = None
    # Every message received, batches unpacked into their items in order.
    received: list[dispatch_pb2.ConnectRequest] = field(default_factory=list)
    # How many of the messages read off the wire were batches.
    batches: int = 0
    outbox: asyncio.Queue[dispatch_pb2.ConnectResponse | None] = field(
        default_factory=asyncio.Queue
    )
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def of_kind(self, kind: str) -> list[Any]:
        return [getattr(m, kind) for m in self.received if m.WhichOneof("msg") == kind]

    async def wait_for(self, predicate: Callable[[], bool], within: float = 10.0) -> None:
        async def loop() -> None:
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), within)

    def send(self, **kwargs: Any) -> None:
        self.outbox.put_nowait(dispatch_pb2.ConnectResponse(**kwargs))

    def send_batch(self, *items: dispatch_pb2.ConnectResponse) -> None:
        """Several messages in one ResponseBatch write."""
        batch = dispatch_pb2.ResponseBatch(items=items)
        self.outbox.put_nowait(dispatch_pb2.ConnectResponse(batch=batch))

    def drop(self) -> None:
        """Ends the stream from the server side (status OK)."""
        self.outbox.put_nowait(None)


class FakeControlPlane(
    nodes_pb2_grpc.NodeServiceServicer, dispatch_pb2_grpc.DispatchServiceServicer
):
    def __init__(self, heartbeat_seconds: int = 1, accepts_batches: bool = True) -> None:
        self.heartbeat_seconds = heartbeat_seconds
        # False: an orchestrator from before batching (HelloAck without accepts_batches).
        self.accepts_batches = accepts_batches
        self._ids = itertools.count(1)
        self.valid_tokens: set[str] = set()
        self.registrations: list[nodes_pb2.RegisterNodeRequest] = []
        self.acks: list[nodes_pb2.AckNodeConfigRequest] = []
        self.capabilities: list[nodes_pb2.CapabilityReport] = []
        self.config = nodes_pb2.GetNodeConfigResponse(
            version=1,
            config_version="01JCONFIG0000000000000001",
            sandbox=nodes_pb2.SandboxConfig(
                default_image="localhost/cynode-sandbox",
                timeouts=nodes_pb2.SandboxTimeouts(default_seconds=600, max_seconds=3600),
                limits=nodes_pb2.SandboxLimits(memory_mb=256, cpus=1.0, pids=64),
                max_output_bytes=262144,
            ),
            constraints=nodes_pb2.NodeConstraints(
                max_request_bytes=10 * 1024 * 1024, max_job_timeout_seconds=1800
            ),
        )
        self.token_ttl = timedelta(hours=1)
        self.sessions: list[StreamSession] = []
        self.new_session = asyncio.Event()
        self.fail_register: grpc.StatusCode | None = None
        # While set, every new dispatch stream is refused with UNAVAILABLE.
        self.refuse_streams = False
        self.events: list[str] = []

    # -- NodeService ------------------------------------------------------------------

    def _check(self, context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and str(value).removeprefix("Bearer ") in self.valid_tokens:
                return str(value)
        return None

    async def RegisterNode(
        self, request: nodes_pb2.RegisterNodeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> nodes_pb2.RegisterNodeResponse:
        self.events.append("register")
        if self.fail_register is not None:
            await context.abort(self.fail_register, "register refused by test")
        if request.psk != PSK:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid pre-shared key")
        self.registrations.append(request)
        token = f"jwt-{next(self._ids)}"
        self.valid_tokens.add(token)
        response = nodes_pb2.RegisterNodeResponse(
            version=1, initial_config_version=self.config.config_version, node_id="NODE01"
        )
        response.auth.node_jwt = token
        response.auth.expires_at.FromDatetime(datetime.now(UTC) + self.token_ttl)
        return response

    async def GetNodeConfig(
        self, request: nodes_pb2.GetNodeConfigRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> nodes_pb2.GetNodeConfigResponse:
        self.events.append("get_config")
        if self._check(context) is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad node token")
        return self.config

    async def AckNodeConfig(
        self, request: nodes_pb2.AckNodeConfigRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> nodes_pb2.AckNodeConfigResponse:
        self.events.append(f"ack:{request.status}")
        if self._check(context) is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad node token")
        self.acks.append(request)
        return nodes_pb2.AckNodeConfigResponse(accepted=True)

    async def ReportCapability(
        self,
        request: nodes_pb2.ReportCapabilityRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> nodes_pb2.ReportCapabilityResponse:
        if self._check(context) is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad node token")
        self.capabilities.append(request.capability)
        return nodes_pb2.ReportCapabilityResponse(accepted=True)

    # -- DispatchService --------------------------------------------------------------

    async def Connect(
        self,
        request_iterator: AsyncIterator[dispatch_pb2.ConnectRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[dispatch_pb2.ConnectResponse]:
        self.events.append("connect")
        if self._check(context) is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad node token")
        if self.refuse_streams:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "streams refused by test")
        session = StreamSession()
        first = await anext(aiter(request_iterator))
        session.received.append(first)
        session.hello = first.hello
        self.sessions.append(session)
        self.new_session.set()
        reader = asyncio.create_task(self._read(request_iterator, session))
        try:
            yield dispatch_pb2.ConnectResponse(
                hello_ack=dispatch_pb2.HelloAck(
                    node_id="NODE01",
                    lease_seconds=30,
                    heartbeat_seconds=self.heartbeat_seconds,
                    accepts_batches=self.accepts_batches,
                )
            )
            while True:
                message = await session.outbox.get()
                if message is None:
                    return
                yield message
        finally:
            reader.cancel()
            session.ended.set()

    async def _read(
        self, requests: AsyncIterator[dispatch_pb2.ConnectRequest], session: StreamSession
    ) -> None:
        async for message in requests:
            if message.HasField("batch"):
                session.batches += 1
                session.received.extend(message.batch.items)
            else:
                session.received.append(message)
            session.changed.set()

    async def session(self, index: int, within: float = 10.0) -> StreamSession:
        """The index-th stream ever opened, waiting for it to open."""

        async def loop() -> None:
            while len(self.sessions) <= index:
                self.new_session.clear()
                await self.new_session.wait()

        await asyncio.wait_for(loop(), within)
        return self.sessions[index]


async def start_server(plane: FakeControlPlane) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    nodes_pb2_grpc.add_NodeServiceServicer_to_server(plane, server)  # type: ignore[no-untyped-call]
    dispatch_pb2_grpc.add_DispatchServiceServicer_to_server(plane, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"
