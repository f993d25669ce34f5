"""`certs init` and TLS on the listeners: a real private CA, real handshakes over sockets
(gRPC and REST), mTLS for nodes refusing missing, foreign and expired client
certificates, and the plain-text rules of start-up."""

from __future__ import annotations

import asyncio
import logging
import ssl
import stat
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import httpx
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from cynode.controlplane.v1 import nodes_pb2, nodes_pb2_grpc
from cynode.orchestrator import cli
from cynode.orchestrator.app import Orchestrator, control_plane_hook
from cynode.orchestrator.certs import (
    CA_CERT,
    SERVER_CERT,
    SERVER_KEY,
    CertsError,
    KeyPair,
    fingerprint,
    init_certs,
    issue,
    issue_node,
    load_ca,
    make_ca,
    node_paths,
)
from cynode.orchestrator.config import Settings, SettingsError, load_settings
from cynode.orchestrator.listeners import ServicePorts, Tls


def _ok(_: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


REST_APP = Starlette(routes=[Route("/healthz", _ok)])


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    directory = tmp_path / "certs"
    init_certs(directory, ["localhost", "127.0.0.1"], nodes=["node-a"])
    return directory


# -- certs init --------------------------------------------------------------------------


def test_init_writes_ca_server_and_node_certs_with_private_keys_0600(certs: Path) -> None:
    for name in ("ca.key", "server.key", "node-node-a.key"):
        assert stat.S_IMODE((certs / name).stat().st_mode) == 0o600
    ca = x509.load_pem_x509_certificate((certs / CA_CERT).read_bytes())
    server = x509.load_pem_x509_certificate((certs / SERVER_CERT).read_bytes())
    node = x509.load_pem_x509_certificate((certs / "node-node-a.pem").read_bytes())
    assert server.issuer == ca.subject and node.issuer == ca.subject
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert [str(a) for a in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    usage = node.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usage and ExtendedKeyUsageOID.SERVER_AUTH in usage


def test_init_keeps_an_existing_ca_unless_forced(certs: Path) -> None:
    first = fingerprint((certs / CA_CERT).read_bytes())
    again = init_certs(certs, ["other.example"])
    assert again.fingerprint == first
    assert init_certs(certs, ["x"], force=True).fingerprint != first


def test_fingerprint_is_sha256_of_der(certs: Path) -> None:
    text = fingerprint((certs / CA_CERT).read_bytes())
    assert len(text.split(":")) == 32 and text == text.upper()


def test_bad_names_and_missing_ca_are_refused(tmp_path: Path) -> None:
    ca = make_ca()
    with pytest.raises(CertsError, match="at least one name"):
        issue(ca, "x", [])
    with pytest.raises(CertsError, match="not a host name"):
        issue(ca, "x", ["bad name"])
    with pytest.raises(CertsError, match="no CA"):
        load_ca(tmp_path)
    (tmp_path / "ca.pem").write_text("junk")
    (tmp_path / "ca.key").write_text("junk")
    with pytest.raises(CertsError, match="cannot be read"):
        load_ca(tmp_path)
    with pytest.raises(CertsError, match="slug"):
        node_paths(tmp_path, "../x")


def test_cli_certs_init_and_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "c"
    assert cli.main(["certs", "init", "--dir", str(directory), "--node", "n1"]) == 0
    out = capsys.readouterr()
    assert "CA fingerprint (SHA-256): " in out.out
    assert fingerprint((directory / CA_CERT).read_bytes()) in out.out
    assert (directory / "node-n1.pem").is_file()
    assert cli.main(["certs", "node", "n2", "--dir", str(directory), "--name", "10.1.2.3"]) == 0
    assert "node-n2.pem" in capsys.readouterr().err
    assert cli.main(["certs", "node", "n3", "--dir", str(tmp_path / "none")]) == 2
    assert "no CA" in capsys.readouterr().err


# -- start-up rules ----------------------------------------------------------------------


def test_plain_text_on_a_reachable_address_needs_insecure(certs: Path) -> None:
    with pytest.raises(SettingsError, match="needs CYNODE_TLS_CERT"):
        load_settings(env={"CYNODE_LISTEN_HOST": "198.18.0.1"})
    settings = load_settings(env={"CYNODE_LISTEN_HOST": "198.18.0.1", "CYNODE_INSECURE": "1"})
    assert settings.plain_text_exposed
    tls = load_settings(
        env={
            "CYNODE_LISTEN_HOST": "198.18.0.1",
            "CYNODE_TLS_CERT": str(certs / SERVER_CERT),
            "CYNODE_TLS_KEY": str(certs / SERVER_KEY),
            "CYNODE_NODE_CLIENT_CA": str(certs / CA_CERT),
        }
    )
    assert not tls.plain_text_exposed and tls.node_client_ca == certs / CA_CERT
    with pytest.raises(SettingsError, match="mTLS"):
        load_settings(env={"CYNODE_NODE_CLIENT_CA": str(certs / CA_CERT)})


def test_insecure_start_warns_loudly(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    with caplog.at_level(logging.WARNING):
        cli._warn_plain_text(Settings(host="198.18.0.1", insecure=True))
    assert "INSECURE: serving PLAIN TEXT on 198.18.0.1" in caplog.text
    assert "PLAIN TEXT" in capsys.readouterr().err
    caplog.clear()
    cli._warn_plain_text(Settings())
    assert "INSECURE" not in caplog.text


# -- real handshakes ---------------------------------------------------------------------


async def _ports(tls: Tls | None) -> ServicePorts:
    ports = ServicePorts(
        {}, REST_APP, host="127.0.0.1", rest_port=0, grpc_port=0, max_message_bytes=1 << 20, tls=tls
    )
    await ports.start()
    return ports


@pytest.fixture
async def mtls_ports(certs: Path) -> AsyncIterator[ServicePorts]:
    ports = await _ports(Tls(certs / SERVER_CERT, certs / SERVER_KEY, certs / CA_CERT))
    yield ports
    await ports.stop()


async def _health(target: str, creds: grpc.ChannelCredentials | None) -> str:
    """SERVING, or the status code name the call failed with."""
    channel = grpc.aio.secure_channel(target, creds) if creds else grpc.aio.insecure_channel(target)
    async with channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        except grpc.aio.AioRpcError as exc:
            return str(exc.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def _client(ca: Path, pair: KeyPair | None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        ca.read_bytes(),
        pair.key_pem() if pair else None,
        pair.cert_pem() if pair else None,
    )


async def test_tls_without_client_auth_serves_verified_clients(certs: Path) -> None:
    ports = await _ports(Tls(certs / SERVER_CERT, certs / SERVER_KEY))
    try:
        target = f"localhost:{ports.grpc_port}"
        assert await _health(target, _client(certs / CA_CERT, None)) == "SERVING"
        # A client that trusts another CA refuses the server.
        foreign = make_ca("someone else")
        foreign_ca = certs / "foreign.pem"
        foreign_ca.write_bytes(foreign.cert_pem())
        assert await _health(target, _client(foreign_ca, None)) == "UNAVAILABLE"
        # Plain text against a TLS port gets nowhere.
        assert await _health(target, None) == "UNAVAILABLE"
        verify = ssl.create_default_context(cafile=str(certs / CA_CERT))
        async with httpx.AsyncClient(verify=verify) as http:
            reply = await http.get(f"https://localhost:{ports.rest_port}/healthz")
            assert reply.text == "ok"
    finally:
        await ports.stop()


async def test_mtls_accepts_only_client_certificates_from_the_ca(
    certs: Path, mtls_ports: ServicePorts
) -> None:
    target = f"localhost:{mtls_ports.grpc_port}"
    ca_file = certs / CA_CERT
    ca = load_ca(certs)
    good = issue(ca, "node-a", ["node-a"], client=True)
    expired = issue(
        ca,
        "node-a",
        ["node-a"],
        client=True,
        days=1,
        not_before=datetime.now(UTC) - timedelta(days=3),
    )
    foreign = issue(make_ca("rogue CA"), "node-a", ["node-a"], client=True)
    assert await _health(target, _client(ca_file, good)) == "SERVING"
    assert await _health(target, _client(ca_file, None)) == "UNAVAILABLE"
    assert await _health(target, _client(ca_file, expired)) == "UNAVAILABLE"
    assert await _health(target, _client(ca_file, foreign)) == "UNAVAILABLE"

    url = f"https://localhost:{mtls_ports.rest_port}/healthz"
    cert, key = issue_node(certs, "node-b")
    with_cert = ssl.create_default_context(cafile=str(ca_file))
    with_cert.load_cert_chain(str(cert), str(key))
    async with httpx.AsyncClient(verify=with_cert) as http:
        assert (await http.get(url)).text == "ok"
    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(ca_file))) as http:
        with pytest.raises(httpx.HTTPError):
            await http.get(url)


async def test_serve_with_mtls_control_plane_registers_a_node_with_its_cert(
    certs: Path, tmp_path: Path
) -> None:
    settings = replace(
        Settings(),
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'o.db'}",
        gateway_rest_port=0,
        gateway_grpc_port=0,
        control_rest_port=0,
        control_grpc_port=0,
        admin_password="admin-password-123",
        node_psk="psk-0123456789abcdef",
        require_inference=False,
        tls_cert=certs / SERVER_CERT,
        tls_key=certs / SERVER_KEY,
        node_client_ca=certs / CA_CERT,
    )
    stop = asyncio.Event()
    started: list[object] = []
    real_start = Orchestrator.start

    async def spy(self: Orchestrator) -> None:
        await real_start(self)
        started.append(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Orchestrator, "start", spy)
        task = asyncio.create_task(
            cli.serve(settings, control_plane=control_plane_hook(), stop=stop)
        )
        while not started:
            assert not task.done(), task
            await asyncio.sleep(0.05)
    orch = started[0]
    assert isinstance(orch, Orchestrator) and orch.control_ports is not None
    try:
        ca_file = certs / CA_CERT
        cp = f"localhost:{orch.control_ports.grpc_port}"
        cert, key = issue_node(certs, "node-x")
        creds = grpc.ssl_channel_credentials(
            ca_file.read_bytes(), key.read_bytes(), cert.read_bytes()
        )
        request = nodes_pb2.RegisterNodeRequest(
            psk="psk-0123456789abcdef",
            capability=nodes_pb2.CapabilityReport(
                version=1, node=nodes_pb2.NodeIdentity(node_slug="node-x")
            ),
        )
        async with grpc.aio.secure_channel(cp, creds) as channel:
            stub = nodes_pb2_grpc.NodeServiceStub(channel)  # type: ignore[no-untyped-call]
            reply = await stub.RegisterNode(request, timeout=10)
            assert reply.auth.node_jwt
        async with grpc.aio.secure_channel(cp, _client(ca_file, None)) as channel:
            stub = nodes_pb2_grpc.NodeServiceStub(channel)  # type: ignore[no-untyped-call]
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.RegisterNode(request, timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        # The user gateway is TLS but asks no client certificate.
        gw = f"localhost:{orch.grpc_port}"
        assert await _health(gw, _client(ca_file, None)) == "SERVING"
    finally:
        stop.set()
        await task
