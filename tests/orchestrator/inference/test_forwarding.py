"""The replica router's own decisions, with a real directory on Postgres and real gRPC
channels to addresses where nothing listens: a holder out of reach is given up after
the retry grace (503, not a hang); a holder's refusals map to the door's errors; the
CA other replicas are checked with."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from cynode.inference.v1 import chat_pb2
from cynode.orchestrator.inference.directory import LINKS, LinkDirectory
from cynode.orchestrator.inference.forward import Forwarder, root_certificates
from cynode.orchestrator.inference.links import LinkRegistry, NodeLink
from cynode.orchestrator.inference.replicas import Caller, ReplicaRouter, _from_status
from cynode.orchestrator.inference.router import (
    BadInferenceRequest,
    NoNode,
    OverLimit,
    Router,
    UnknownModel,
)
from cynode.orchestrator.store import make_engine, upgrade, utcnow
from cynode.testing.ports import free_port
from cynode.testing.postgres import PgSchema


@pytest.fixture
async def pg() -> AsyncIterator[AsyncEngine]:
    schema = PgSchema.create("cyn_fwd")
    engine = make_engine(schema.url)
    await upgrade(engine)
    yield engine
    await engine.dispose()
    schema.drop()


async def test_a_holder_out_of_reach_ends_in_503_after_the_grace(pg: AsyncEngine) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    async with pg.begin() as conn:
        await conn.execute(
            sa.insert(LINKS).values(
                node_id="D" * 26,
                replica_id="D" * 26,
                address=nowhere,
                models=["m1"],
                capacity=1,
                seen_at=utcnow(),
            )
        )
    links = LinkRegistry()
    router = Router(links, user_limit=4, queue_seconds=1)
    directory = LinkDirectory(pg, links, "B" * 26, refresh_s=0.1)
    forwarder = Forwarder("B" * 26)
    replicas = ReplicaRouter(router, directory, forwarder, retry_grace_s=0.5)
    directory.start()
    try:
        await directory.refresh()
        assert replicas.models() == {"m1": 1}
        caller = Caller("u1", token="some-token")
        request = chat_pb2.ChatRequest(model="m1")
        request.messages.add(role="user", content="hi")
        started = time.monotonic()
        with pytest.raises(NoNode, match="went away"):
            await anext(replicas.chat(caller, request))
        assert time.monotonic() - started < 5
        assert directory.holders("m1") == []  # skipped for a while

        # Embeddings take the same way.
        directory._suspect.clear()
        with pytest.raises(NoNode):
            await replicas.embeddings(caller, chat_pb2.EmbeddingsRequest(model="m1", input=["x"]))

        # A model nobody serves while some replica serves others: 404, at once.
        with pytest.raises(UnknownModel):
            await anext(replicas.chat(caller, chat_pb2.ChatRequest(model="other")))

        # A call forwarded to us, or one without a token, stays on our own links.
        links.add(NodeLink("L" * 26, "local", frozenset({"m2"})))
        with pytest.raises(UnknownModel):
            await anext(replicas.chat(Caller("u1", forwarded=True, token="t"), request))
        with pytest.raises(UnknownModel):
            await replicas.embeddings(
                Caller("u1"), chat_pb2.EmbeddingsRequest(model="m1", input=["x"])
            )
        assert replicas.models() == {"m1": 1, "m2": 1}
    finally:
        await directory.stop()
        await forwarder.close()


async def test_no_directory_is_the_local_router() -> None:
    links = LinkRegistry()
    replicas = ReplicaRouter(Router(links, user_limit=1, queue_seconds=1))
    with pytest.raises(NoNode, match="no node"):
        await anext(replicas.chat(Caller("u", token="t"), chat_pb2.ChatRequest(model="m")))
    assert replicas.models() == {}


def _rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details, None)


def test_a_holders_refusal_is_the_doors_error() -> None:
    cases = {
        grpc.StatusCode.RESOURCE_EXHAUSTED: OverLimit,
        grpc.StatusCode.NOT_FOUND: UnknownModel,
        grpc.StatusCode.INVALID_ARGUMENT: BadInferenceRequest,
        grpc.StatusCode.UNAUTHENTICATED: NoNode,
    }
    for code, kind in cases.items():
        error = _from_status(_rpc_error(code, f"said {code.name}"))
        assert type(error) is kind and str(error) == f"said {code.name}"


def test_the_ca_beside_the_certificate_checks_other_replicas(tmp_path: Path) -> None:
    assert root_certificates(None) is None
    cert = tmp_path / "server.pem"
    assert root_certificates(cert) is None  # no ca.pem: the system's roots
    (tmp_path / "ca.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\n")
    assert root_certificates(cert) == b"-----BEGIN CERTIFICATE-----\n"


async def test_tls_channels_are_made_once_per_address() -> None:
    forwarder = Forwarder("R" * 26, tls=True)
    first = forwarder._stub("replica-a.example:12081")
    assert forwarder._stub("replica-a.example:12081") is first
    assert forwarder._stub("replica-b.example:12081") is not first
    await forwarder.close()
    assert forwarder._stubs == {}
