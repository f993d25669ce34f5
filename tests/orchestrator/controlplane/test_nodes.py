"""NodeService over real gRPC: registration, config delivery and acks, node tokens."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest
from sqlmodel import col, select
from ulid import ULID

from cynode.controlplane.v1 import nodes_pb2, nodes_pb2_grpc
from cynode.orchestrator.auth.tokens import InvalidToken, TokenIssuer
from cynode.orchestrator.controlplane import issue_node_token
from cynode.orchestrator.controlplane.tokens import (
    InvalidNodeToken,
    bearer_token,
    verify_node_token,
)
from cynode.orchestrator.simnode import SimNode
from cynode.orchestrator.simnode.harness import ControlPlaneServer
from cynode.orchestrator.store import AuditLog, Node, NodeConfig, session_factory, transaction
from cynode.testing import until

PSK = "test-psk-0123456789"
SECRET = "test-secret-0123456789abcdef-0123456789"


def _stub(srv: ControlPlaneServer) -> tuple[grpc.aio.Channel, nodes_pb2_grpc.NodeServiceStub]:
    channel = grpc.aio.insecure_channel(srv.target)
    return channel, nodes_pb2_grpc.NodeServiceStub(channel)  # type: ignore[no-untyped-call]


def _auth(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


async def test_register_good_psk_returns_bootstrap(server: ControlPlaneServer) -> None:
    node = SimNode(server.target, PSK, "node-a", slots=2, inference=True)
    resp = await node.register()
    assert resp.version == 1
    assert resp.orchestrator.base_url == server.settings.base_url
    assert resp.orchestrator.endpoints.control_plane_grpc == server.settings.grpc_endpoint
    assert resp.auth.node_jwt and resp.auth.expires_at.seconds > resp.issued_at.seconds
    assert ULID.from_str(resp.initial_config_version)
    claims = verify_node_token(SECRET, resp.auth.node_jwt)
    assert claims.node_id == resp.node_id and claims.slug == "node-a"
    again = await node.register()
    assert again.node_id == resp.node_id  # same slug, same node
    async with transaction(session_factory(server.engine)) as s:
        rows = (await s.exec(select(Node).where(col(Node.slug) == "node-a"))).all()
    assert len(rows) == 1
    assert rows[0].inference_supported and rows[0].max_concurrency == 2
    assert rows[0].capability["node"]["node_slug"] == "node-a"
    await node.stop()


async def test_register_bad_psk_is_unauthenticated_and_audited(
    sqlite_server: ControlPlaneServer,
) -> None:
    node = SimNode(sqlite_server.target, "wrong-psk", "node-b")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await node.register()
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "wrong-psk" not in (err.value.details() or "")
    async with transaction(session_factory(sqlite_server.engine)) as s:
        audits = (await s.exec(select(AuditLog))).all()
        nodes = (await s.exec(select(Node))).all()
    assert [(a.action, a.outcome) for a in audits] == [("node.register", "denied")]
    assert "wrong-psk" not in str(audits[0].detail)
    assert nodes == []
    await node.stop()


async def test_register_without_slug_is_invalid(sqlite_server: ControlPlaneServer) -> None:
    channel, stub = _stub(sqlite_server)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.RegisterNode(nodes_pb2.RegisterNodeRequest(psk=PSK))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await channel.close(None)


async def test_config_has_ulid_version_stable_until_body_changes(
    sqlite_server: ControlPlaneServer,
) -> None:
    node = SimNode(sqlite_server.target, PSK, "node-c", inference=False)
    reg = await node.register()
    config = await node.fetch_config()
    assert config.version == 1 and config.node_slug == "node-c"
    assert config.config_version == reg.initial_config_version
    assert ULID.from_str(config.config_version)
    assert config.sandbox.default_image == "localhost/cynode-sandbox"
    assert config.sandbox.timeouts.default_seconds == 3600
    assert config.sandbox.timeouts.max_seconds == 10800
    assert config.sandbox.max_output_bytes == 262144
    assert config.constraints.max_request_bytes == 10 * 1024 * 1024
    assert config.constraints.max_job_timeout_seconds == 10800
    assert not config.inference.enabled and config.inference.upstream == ""
    assert (await node.fetch_config()).config_version == config.config_version

    # The node gains inference: a new version, pushed down its open stream.
    await node.start()
    node.inference = True
    channel, stub = _stub(sqlite_server)
    await stub.ReportCapability(
        nodes_pb2.ReportCapabilityRequest(capability=node.capability()), metadata=node.metadata
    )
    await until(lambda: len(node.config_changes) == 1, what="ConfigChanged pushed")
    await until(lambda: node.config_version == node.config_changes[0], what="refetched")
    new = await node.fetch_config()
    assert new.config_version > config.config_version
    assert new.inference.enabled and new.inference.allowed_models == ["sim-model"]
    assert new.inference.default_model == "sim-model"
    async with transaction(session_factory(sqlite_server.engine)) as s:
        rows = (await s.exec(select(NodeConfig).order_by(col(NodeConfig.config_version)))).all()
    assert [r.ack_status for r in rows] == ["applied", "applied"]
    assert all(r.ack_at is not None for r in rows)
    # Reconnecting with an old version gets a ConfigChanged right after HelloAck.
    node.config_version = config.config_version
    before = len(node.config_changes)
    node.disconnect()
    await until(lambda: len(node.config_changes) > before, what="ConfigChanged on hello")
    await node.stop()
    await channel.close(None)


async def test_ack_failed_unknown_and_invalid(sqlite_server: ControlPlaneServer) -> None:
    node = SimNode(sqlite_server.target, PSK, "node-d")
    await node.register()
    config = await node.fetch_config()
    channel, stub = _stub(sqlite_server)
    await stub.AckNodeConfig(
        nodes_pb2.AckNodeConfigRequest(
            version=1,
            node_slug="node-d",
            config_version=config.config_version,
            status="failed",
            error="image missing",
        ),
        metadata=node.metadata,
    )
    async with transaction(session_factory(sqlite_server.engine)) as s:
        row = (await s.exec(select(NodeConfig))).one()
    assert (row.ack_status, row.ack_error) == ("failed", "image missing")
    assert row.ack_at is not None
    for version, status, code in (
        (str(ULID()), "applied", grpc.StatusCode.NOT_FOUND),
        (config.config_version, "maybe", grpc.StatusCode.INVALID_ARGUMENT),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.AckNodeConfig(
                nodes_pb2.AckNodeConfigRequest(config_version=version, status=status),
                metadata=node.metadata,
            )
        assert err.value.code() == code
    await node.stop()
    await channel.close(None)


async def test_node_calls_need_a_node_token(sqlite_server: ControlPlaneServer) -> None:
    channel, stub = _stub(sqlite_server)
    user_token = TokenIssuer(SECRET, timedelta(minutes=15)).issue_access("u1", "fam1")
    for metadata in ((), _auth("garbage"), _auth(user_token)):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetNodeConfig(nodes_pb2.GetNodeConfigRequest(), metadata=metadata)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # A valid token for a node that does not exist.
    ghost, _ = issue_node_token(SECRET, "01J00000000000000000000000", "ghost", 60)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetNodeConfig(nodes_pb2.GetNodeConfigRequest(), metadata=_auth(ghost))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    await channel.close(None)


def test_node_and_user_tokens_do_not_cross() -> None:
    node_token, _ = issue_node_token(SECRET, "n1", "slug", 60)
    with pytest.raises(InvalidToken):
        TokenIssuer(SECRET, timedelta(minutes=15)).decode_access(node_token)
    user_token = TokenIssuer(SECRET, timedelta(minutes=15)).issue_access("u1", "fam1")
    with pytest.raises(InvalidNodeToken):
        verify_node_token(SECRET, user_token)
    with pytest.raises(InvalidNodeToken):
        verify_node_token("another-secret-0123456789-0123456789", node_token)
    expired, _ = issue_node_token(SECRET, "n1", "slug", -10)
    with pytest.raises(InvalidNodeToken):
        verify_node_token(SECRET, expired)


def test_bearer_token_parsing() -> None:
    assert bearer_token([("Authorization", "Bearer abc")]) == "abc"
    assert bearer_token([("authorization", b"bearer  xyz ")]) == "xyz"
    assert bearer_token([("authorization", "Basic abc")]) is None
    assert bearer_token([("authorization", "Bearer ")]) is None
    assert bearer_token(None) is None
