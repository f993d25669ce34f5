"""Which TLS context the client makes: CA certificates only where TLS is spoken.

A plain-http gateway gets no TLS context at all (nor the `ssl` module's CA loading: tens
of ms of every start, for nothing); an https gateway gets the CA file given, else the
system's store (SPEC §1.3), where SSL_CERT_FILE and SSL_CERT_DIR point OpenSSL. Checked
against a real TLS listener on loopback, with a certificate from the orchestrator's own
private CA.
"""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cynode.orchestrator.certs import issue, make_ca
from cynork import GatewayClient
from cynork._errors import GatewayError
from cynork._http import HTTPTransport, default_ssl_context


class _Healthz(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def tls_gateway(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(https URL, CA file) of a TLS listener on 127.0.0.1 that answers /healthz."""
    ca = make_ca()
    leaf = issue(ca, "127.0.0.1", ["127.0.0.1"])
    ca.write(tmp_path / "ca.pem", tmp_path / "ca.key")
    leaf.write(tmp_path / "server.pem", tmp_path / "server.key")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Healthz)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", tmp_path / "ca.pem"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def http_gateway() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Healthz)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_plain_http_client_makes_no_tls_context(http_gateway: str) -> None:
    with GatewayClient(http_gateway) as client:
        assert client.healthz() == (True, "ok")
        transport = client._transport
        assert isinstance(transport, HTTPTransport) and transport._context is None


def test_the_default_context_verifies_with_the_system_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    context = default_ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    system = ssl.create_default_context()
    assert context.cert_store_stats() == system.cert_store_stats()


def test_an_https_gateway_is_reached_with_its_ca_file(tls_gateway: tuple[str, Path]) -> None:
    url, ca_file = tls_gateway
    with GatewayClient(url, ca_file=str(ca_file)) as client:
        assert client.healthz() == (True, "ok")
        assert client.healthz() == (True, "ok")


def test_ssl_cert_file_names_the_trust(
    tls_gateway: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenSSL's own variable, honoured as httpx honoured it."""
    url, ca_file = tls_gateway
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    with GatewayClient(url) as client:
        assert client.healthz() == (True, "ok")


def test_an_https_gateway_without_its_ca_fails_closed(
    tls_gateway: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default trust (the system's public CAs) does not know the private CA: the
    handshake fails, and says why."""
    url, _ = tls_gateway
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with (
        GatewayClient(url) as client,
        pytest.raises(GatewayError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        client.healthz()
