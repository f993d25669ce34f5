"""Which TLS context the client makes: CA certificates only where TLS is spoken.

A plain-http gateway gets a context with no CA at all (httpx's default would load
the whole bundle, ~40 ms of every start, for nothing); an https gateway keeps the
default bundle or the given CA file. Checked against a real TLS listener on loopback,
with a certificate from the orchestrator's own private CA.
"""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cynode.orchestrator.certs import issue, make_ca
from cynork import GatewayClient
from cynork._client import no_ca_context


def _context(client: GatewayClient) -> ssl.SSLContext:
    # httpx keeps the context its transport was made with on the connection pool.
    context = client._http._transport._pool._ssl_context  # type: ignore[attr-defined]
    assert isinstance(context, ssl.SSLContext)
    return context


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


def test_a_plain_http_client_loads_no_ca() -> None:
    with GatewayClient("http://127.0.0.1:9/") as client:
        context = _context(client)
        assert context.cert_store_stats()["x509_ca"] == 0
        # Still a verifying context: nothing it could be handed would be trusted.
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_an_https_client_keeps_the_default_cas() -> None:
    with GatewayClient("https://gateway.example") as client:
        assert _context(client).cert_store_stats()["x509_ca"] > 0


def test_an_https_gateway_is_reached_with_its_ca_file(tls_gateway: tuple[str, Path]) -> None:
    url, ca_file = tls_gateway
    with GatewayClient(url, ca_file=str(ca_file)) as client:
        assert client.healthz() == (True, "ok")


def test_the_no_ca_context_fails_closed(tls_gateway: tuple[str, Path]) -> None:
    """Had an https URL reached the plain-http client's context, the handshake fails:
    no certificate verifies against no CA."""
    url, _ = tls_gateway
    with (
        httpx.Client(verify=no_ca_context()) as http,
        pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        http.get(f"{url}/healthz")
