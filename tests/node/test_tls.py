"""The node's TLS: config rules (no PSK over plain text to another host), the pinned CA
and its fingerprint, mTLS client certificates against a real TLS gRPC server, the
error hint a failed handshake gets, and the worker API over HTTPS."""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import grpc
import httpx
import pytest

from cynode.controlplane.v1 import dispatch_pb2_grpc, nodes_pb2, nodes_pb2_grpc
from cynode.node.config import ConfigError, NodeConfig, is_loopback, load_config
from cynode.node.cpclient import (
    ControlPlaneClient,
    TlsConfigError,
    ca_fingerprint,
    channel_credentials,
    make_channel,
    tls_hint,
)
from cynode.node.daemon import NodeDaemon, _describe
from cynode.node.metrics import NodeMetrics
from cynode.node.readiness import Readiness
from cynode.node.state import StateDir
from cynode.node.worker_api import (
    PlainTextRefused,
    WorkerApiServer,
    WorkerApiTls,
    build_app,
    worker_api_tls,
)
from cynode.orchestrator.certs import fingerprint, init_certs, issue, load_ca, make_ca
from tests.node.cp_server import PSK, FakeControlPlane


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    directory = tmp_path / "certs"
    init_certs(directory, ["localhost", "127.0.0.1"], nodes=["node-test"])
    return directory


def tls_config(certs: Path, tmp_path: Path, target: str, **changes: object) -> NodeConfig:
    base = NodeConfig(
        node_slug="node-test",
        psk=PSK,
        orchestrator_url=f"https://{target}",
        control_plane_grpc=target,
        ca_file=str(certs / "ca.pem"),
        client_cert=str(certs / "node-node-test.pem"),
        client_key=str(certs / "node-node-test.key"),
        state_dir=tmp_path / "state",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


# -- config ------------------------------------------------------------------------------


def test_plain_text_to_another_host_is_refused_unless_insecure() -> None:
    env = {"CYNODE_NODE_SLUG": "n", "CYNODE_ORCHESTRATOR_URL": "http://198.18.0.1:12082"}
    with pytest.raises(ConfigError, match="refusing plain text"):
        load_config(None, env=env)
    config = load_config(None, env={**env, "CYNODE_INSECURE": "yes"})
    assert config.insecure and not config.uses_tls
    with pytest.raises(ConfigError, match="true or false"):
        load_config(None, env={**env, "CYNODE_INSECURE": "maybe"})
    tls = load_config(
        None,
        env={
            "CYNODE_NODE_SLUG": "n",
            "CYNODE_ORCHESTRATOR_URL": "https://198.18.0.1:12082",
            "CYNODE_CA_FILE": "/ca.pem",
            "CYNODE_CA_FINGERPRINT": "AB:CD",
            "CYNODE_CLIENT_CERT": "/c.pem",
            "CYNODE_CLIENT_KEY": "/c.key",
            "CYNODE_WORKER_API_TLS_CERT": "/w.pem",
            "CYNODE_WORKER_API_TLS_KEY": "/w.key",
        },
    )
    assert tls.uses_tls and tls.grpc_target == "198.18.0.1:12083"
    assert tls.advertised_worker_api.startswith("https://")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"client_cert": "/c.pem"}, "go together"),
        ({"worker_api_tls_key": "/k"}, "go together"),
        ({"client_cert": "/c", "client_key": "/k"}, "needs TLS"),
        ({"ca_fingerprint": "AB"}, "pins"),
    ],
)
def test_tls_settings_that_do_not_fit_are_refused(changes: dict[str, str], message: str) -> None:
    from cynode.node.config import validate

    with pytest.raises(ConfigError, match=message):
        validate(replace(NodeConfig(node_slug="n"), **changes))  # type: ignore[arg-type]


def test_loopback_names() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("[::1]") and is_loopback("localhost")
    assert not is_loopback("198.18.0.1") and not is_loopback("cp.example")


# -- CA pin ------------------------------------------------------------------------------


def test_fingerprint_matches_certs_init_and_pins_the_ca(certs: Path, tmp_path: Path) -> None:
    pem = (certs / "ca.pem").read_bytes()
    assert ca_fingerprint(pem) == fingerprint(pem)
    config = tls_config(certs, tmp_path, "localhost:1", ca_fingerprint=ca_fingerprint(pem))
    assert channel_credentials(config) is not None
    lower = replace(config, ca_fingerprint="sha256:" + ca_fingerprint(pem).lower())
    assert channel_credentials(lower) is not None
    wrong = replace(config, ca_fingerprint="00:11")
    with pytest.raises(TlsConfigError, match="not the pinned 00:11"):
        channel_credentials(wrong)
    (tmp_path / "junk.pem").write_text("no certificate here")
    with pytest.raises(TlsConfigError, match="no PEM certificate"):
        channel_credentials(replace(config, ca_file=str(tmp_path / "junk.pem")))
    with pytest.raises(TlsConfigError, match=r"cannot read orchestrator\.client_key"):
        channel_credentials(replace(config, client_key=str(tmp_path / "missing")))


# -- real handshakes ---------------------------------------------------------------------


@pytest.fixture
async def mtls_plane(certs: Path) -> AsyncIterator[tuple[FakeControlPlane, str]]:
    plane = FakeControlPlane()
    server = grpc.aio.server()
    nodes_pb2_grpc.add_NodeServiceServicer_to_server(plane, server)  # type: ignore[no-untyped-call]
    dispatch_pb2_grpc.add_DispatchServiceServicer_to_server(plane, server)  # type: ignore[no-untyped-call]
    creds = grpc.ssl_server_credentials(
        [((certs / "server.key").read_bytes(), (certs / "server.pem").read_bytes())],
        root_certificates=(certs / "ca.pem").read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    yield plane, f"localhost:{port}"
    await server.stop(grace=None)


async def _register(config: NodeConfig) -> nodes_pb2.RegisterNodeResponse:
    state = StateDir(config.state_dir)
    state.prepare()
    channel = make_channel(config)
    client = ControlPlaneClient(config, channel, state, lambda: nodes_pb2.CapabilityReport())
    try:
        return await client.register()
    finally:
        await channel.close(grace=None)


async def test_node_registers_over_mtls_with_its_certificate(
    certs: Path, tmp_path: Path, mtls_plane: tuple[FakeControlPlane, str]
) -> None:
    plane, target = mtls_plane
    reply = await _register(tls_config(certs, tmp_path, target))
    assert reply.auth.node_jwt and len(plane.registrations) == 1


@pytest.mark.parametrize("case", ["no client cert", "foreign client cert", "wrong CA", "plain"])
async def test_refused_handshakes_fail_with_a_tls_hint(
    certs: Path, tmp_path: Path, mtls_plane: tuple[FakeControlPlane, str], case: str
) -> None:
    plane, target = mtls_plane
    config = tls_config(certs, tmp_path, target)
    if case == "no client cert":
        config = replace(config, client_cert="", client_key="")
    elif case == "foreign client cert":
        rogue = issue(make_ca("rogue"), "node-test", ["node-test"], client=True)
        rogue.write(tmp_path / "rogue.pem", tmp_path / "rogue.key")
        config = replace(
            config, client_cert=str(tmp_path / "rogue.pem"), client_key=str(tmp_path / "rogue.key")
        )
    elif case == "wrong CA":
        (tmp_path / "other-ca.pem").write_bytes(make_ca("other").cert_pem())
        config = replace(config, ca_file=str(tmp_path / "other-ca.pem"))
    else:
        config = replace(
            config,
            orchestrator_url=f"http://{target}",
            ca_file="",
            client_cert="",
            client_key="",
        )
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await _register(config)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    described = _describe(failed.value, config)
    assert "UNAVAILABLE" in described
    assert ("TLS" in described) or (case == "no client cert" and "UNAVAILABLE" in described)
    assert PSK not in described
    assert plane.registrations == []


def test_tls_hint_texts(certs: Path, tmp_path: Path) -> None:
    config = tls_config(certs, tmp_path, "cp:12083")
    hint = tls_hint(config, "Ssl handshake failed: CERTIFICATE_VERIFY_FAILED")
    assert "orchestrator.ca_file" in hint and "client certificate" in hint
    assert tls_hint(config, "deadline exceeded") == ""
    plain = replace(config, orchestrator_url="http://cp:12082", ca_file="", insecure=True)
    plain = replace(plain, client_cert="", client_key="")
    assert "plain text" in tls_hint(plain, "Socket closed")
    assert _describe(ValueError("x")) == "x"


# -- worker API --------------------------------------------------------------------------


def test_worker_api_plain_text_rules(
    certs: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert worker_api_tls(NodeConfig(node_slug="n")) is None
    exposed = NodeConfig(node_slug="n", worker_api_host="198.18.0.2")
    with pytest.raises(PlainTextRefused, match=r"needs worker_api\.tls_cert"):
        worker_api_tls(exposed)
    with caplog.at_level(logging.WARNING):
        assert worker_api_tls(replace(exposed, insecure=True)) is None
    assert "INSECURE: worker API serves PLAIN TEXT" in caplog.text
    tls = replace(exposed, worker_api_tls_cert="/c", worker_api_tls_key="/k")
    assert worker_api_tls(tls) == WorkerApiTls("/c", "/k")


async def test_worker_api_serves_https(certs: Path, tmp_path: Path) -> None:
    tls = WorkerApiTls(str(certs / "node-node-test.pem"), str(certs / "node-node-test.key"))
    readiness = Readiness()
    server = WorkerApiServer(build_app(readiness, NodeMetrics()), "127.0.0.1", 0, tls=tls)
    await server.start()
    try:
        verify = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        async with httpx.AsyncClient(verify=verify) as http:
            # The node certificate names the slug; connect by that name.
            reply = await http.get(
                f"https://127.0.0.1:{server.port}/healthz",
                extensions={"sni_hostname": "node-test"},
            )
        assert reply.text == "ok"
    finally:
        await server.stop()


async def test_daemon_refuses_a_plain_worker_api_on_another_address(tmp_path: Path) -> None:
    config = NodeConfig(node_slug="n", worker_api_host="198.18.0.9", state_dir=tmp_path)
    with pytest.raises(PlainTextRefused):
        await NodeDaemon(config, host=object()).start_api()  # type: ignore[arg-type]


def test_ca_loaded_by_cert_helpers(certs: Path) -> None:
    # The CA the node pins is the one `certs init` made (its key stays with the CA).
    assert load_ca(certs).cert_pem() == (certs / "ca.pem").read_bytes()
