"""cynork._http against real sockets: a scripted HTTP/1.1 server on loopback that
answers each request with the bytes a test gives it, so framing (Content-Length,
chunked, to the end), keep-alive, a server closing an idle connection, timeouts and
proxies are what goes over the wire, not a mock's idea of it."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from cynode.testing import free_port
from cynork import GatewayClient
from cynork._errors import GatewayError
from cynork._http import (
    ConnectError,
    HTTPTransport,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    Request,
    Response,
    WriteError,
    _bypassed,
    proxy_for,
)

# What the server does with one request: the raw bytes to send back, then whether to
# close the connection (True) or keep reading requests on it (False).
Script = Callable[[bytes], tuple[bytes, bool]]


@dataclass
class Server:
    """Accepts connections on 127.0.0.1 and answers each request by `script`."""

    script: Script
    heads: list[bytes] = field(default_factory=list)
    connections: int = 0
    sock: socket.socket = field(init=False)

    def __post_init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        # The client may go away mid-answer: some tests do on purpose.
        with contextlib.suppress(OSError):
            self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        with conn, reader:
            while True:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = reader.readline()
                    if not line:
                        return
                    head += line
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + reader.read(length)
                self.heads.append(request)
                answer, close = self.script(request)
                conn.sendall(answer)
                if close:
                    return

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def serve() -> Iterator[Callable[[Script], Server]]:
    servers: list[Server] = []

    def start(script: Script) -> Server:
        servers.append(Server(script))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def ok(body: bytes = b"ok", extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\n{extra}\r\n".encode() + body


def get(transport: HTTPTransport, url: str, timeout: float = 30.0) -> Response:
    return transport.handle_request(Request("GET", url, timeout=timeout))


def test_keep_alive_reuses_one_connection(serve: Callable[[Script], Server]) -> None:
    server = serve(lambda _: (ok(b'{"a": 1}', "content-type: application/json\r\n"), False))
    transport = HTTPTransport(environ={})
    for _ in range(3):
        resp = get(transport, f"{server.url}/x?y=1")
        assert resp.json() == {"a": 1} and resp.reason_phrase == "OK"
    assert server.connections == 1
    assert server.heads[0].startswith(b"GET /x?y=1 HTTP/1.1\r\nhost: 127.0.0.1:")
    assert b"user-agent: cynork\r\n" in server.heads[0]
    transport.close()


def test_a_body_not_read_to_its_end_is_not_reused(serve: Callable[[Script], Server]) -> None:
    server = serve(lambda _: (ok(b"x" * 200_000), False))
    transport = HTTPTransport(environ={})
    resp = get(transport, server.url)
    assert len(next(resp.iter_bytes())) <= 64 * 1024
    resp.close()
    assert len(get(transport, server.url).read()) == 200_000
    assert server.connections == 2


def test_chunked_lines_arrive_as_sent(serve: Callable[[Script], Server]) -> None:
    body = "".join(
        f"{len(part):x};ext=1\r\n".encode().decode() + part + "\r\n"
        for part in ('{"n": 1}\n{"n"', ": 2}\r\n", "é\n", "tail")
    )
    answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    answer += body.encode() + b"0\r\nx-trailer: 1\r\n\r\n"
    # The chunk sizes above count characters; "é" is two bytes: size that chunk in bytes.
    answer = answer.replace(b"2;ext=1\r\n\xc3\xa9\n", b"3;ext=1\r\n\xc3\xa9\n")
    server = serve(lambda _: (answer, False))
    transport = HTTPTransport(environ={})
    resp = get(transport, server.url)
    assert list(resp.iter_lines()) == ['{"n": 1}', '{"n": 2}', "é", "tail"]
    assert get(transport, server.url).text.startswith('{"n": 1}')
    assert server.connections == 1


def test_a_body_to_the_connections_end(serve: Callable[[Script], Server]) -> None:
    server = serve(lambda _: (b"HTTP/1.0 200 OK\r\n\r\nall of it", True))
    transport = HTTPTransport(environ={})
    assert get(transport, server.url).read() == b"all of it"
    assert get(transport, server.url).read() == b"all of it"
    assert server.connections == 2


def test_informational_answers_and_empty_bodies(serve: Callable[[Script], Server]) -> None:
    def script(request: bytes) -> tuple[bytes, bool]:
        if request.startswith(b"HEAD"):
            return b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", False
        return b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", False

    server = serve(script)
    transport = HTTPTransport(environ={})
    resp = transport.handle_request(Request("POST", server.url, content=b"{}"))
    assert (resp.status_code, resp.read(), resp.reason_phrase) == (204, b"", "No Content")
    assert transport.handle_request(Request("HEAD", server.url)).read() == b""
    assert b"content-length: 2\r\n" in server.heads[0]
    assert server.connections == 1


def test_a_server_that_closed_the_idle_connection_is_asked_again(
    serve: Callable[[Script], Server],
) -> None:
    """Keep-alive's race: the server closes a connection the client still holds; the
    next request goes out on a new one, once."""
    server = serve(lambda _: (ok(), True))  # answers, then closes without saying so
    transport = HTTPTransport(environ={})
    for _ in range(3):
        assert get(transport, server.url).read() == b"ok"
    assert len(server.heads) == 3 and server.connections == 3


@pytest.mark.parametrize(
    ("answer", "error", "message"),
    [
        (b"garbage\r\n\r\n", RemoteProtocolError, "not an HTTP status line"),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", RemoteProtocolError, "not a header line"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n", RemoteProtocolError, "Content-Length"),
        (b"", RemoteProtocolError, "without answering"),
    ],
)
def test_broken_answers(
    serve: Callable[[Script], Server], answer: bytes, error: type[Exception], message: str
) -> None:
    server = serve(lambda _: (answer, True))
    with pytest.raises(error, match=message):
        get(HTTPTransport(environ={}), server.url)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
    ],
)
def test_a_body_cut_off(serve: Callable[[Script], Server], answer: bytes) -> None:
    server = serve(lambda _: (answer, True))
    resp = get(HTTPTransport(environ={}), server.url)
    with pytest.raises(RemoteProtocolError):
        resp.read()


def test_too_long_and_too_many_header_lines(serve: Callable[[Script], Server]) -> None:
    server = serve(lambda _: (b"HTTP/1.1 200 OK\r\nx: " + b"a" * 70_000 + b"\r\n\r\n", True))
    with pytest.raises(RemoteProtocolError, match="longer than 64 KiB"):
        get(HTTPTransport(environ={}), server.url)
    many = b"HTTP/1.1 200 OK\r\n" + b"x: 1\r\n" * 300 + b"\r\n"
    server = serve(lambda _: (many, True))
    with pytest.raises(RemoteProtocolError, match="too many header lines"):
        get(HTTPTransport(environ={}), server.url)


def test_timeouts(serve: Callable[[Script], Server]) -> None:
    silent = serve(lambda _: (b"", False))  # reads the request, never answers
    with pytest.raises(ReadTimeout):
        get(HTTPTransport(environ={}), silent.url, timeout=0.2)
    stalled = serve(lambda _: (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", False))
    resp = get(HTTPTransport(environ={}), stalled.url, timeout=0.2)
    with pytest.raises(ReadTimeout, match="middle of an answer"):
        resp.read()


def test_connect_failures() -> None:
    port = free_port()
    with pytest.raises(ConnectError, match="refused"):
        get(HTTPTransport(environ={}), f"http://127.0.0.1:{port}/")
    with pytest.raises(ConnectError, match="unsupported URL scheme"):
        get(HTTPTransport(environ={}), "ftp://127.0.0.1/")


def test_a_header_with_a_line_break_is_never_sent(serve: Callable[[Script], Server]) -> None:
    server = serve(lambda _: (ok(), False))
    request = Request("GET", server.url, headers={"authorization": "Bearer x\r\nevil: 1"})
    with pytest.raises(WriteError, match="line break"):
        HTTPTransport(environ={}).handle_request(request)
    assert server.heads == []


def test_a_read_failure_mid_body_is_a_read_error() -> None:
    def broken() -> Iterator[bytes]:
        yield b"a"
        raise ReadError("reset")

    resp = Response(200, stream=broken())
    with pytest.raises(ReadError):
        resp.read()


def test_responses_made_by_hand() -> None:
    assert Response(404).reason_phrase == "Not Found"
    assert Response(599).reason_phrase == ""
    assert Response(200, text="hé").headers["content-type"].startswith("text/plain")
    odd = Response(200, headers={"Content-Type": "text/plain; charset=nope"}, content=b"x")
    assert odd.text == "x"
    latin = Response(
        200, headers={"content-type": 'text/plain; charset="latin-1"'}, content=b"\xe9"
    )
    assert latin.text == "é"
    assert list(Response(200, content=b"a\nb").iter_lines()) == ["a", "b"]
    assert list(Response(200).iter_bytes()) == []


# -- proxies -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "bypassed"),
    [
        ("*", "gateway.example", 80, True),
        ("example.com", "example.com", 80, True),
        ("example.com", "api.example.com", 80, True),
        ("example.com", "badexample.com", 80, False),
        (".example.com", "api.example.com", 80, True),
        (" , 127.0.0.1", "127.0.0.1", 12080, True),
        ("127.0.0.1:9999", "127.0.0.1", 12080, False),
        ("127.0.0.1:12080", "127.0.0.1", 12080, True),
        ("[::1]:12080", "::1", 12080, True),
        ("::1", "[::1]", 12080, True),
        ("http://gw.example", "gw.example", 80, True),
        ("localhost", "LOCALHOST", 80, True),
    ],
)
def test_no_proxy(no_proxy: str, host: str, port: int, bypassed: bool) -> None:
    assert _bypassed(host, port, no_proxy) is bypassed


def test_proxy_for_reads_the_environment_as_httpx_did() -> None:
    env = {"HTTP_PROXY": "proxy:3128", "https_proxy": "http://tls-proxy:8080"}
    assert proxy_for("http", "gw", 80, env) == "http://proxy:3128"
    assert proxy_for("https", "gw", 443, env) == "http://tls-proxy:8080"
    assert proxy_for("https", "gw", 443, {"ALL_PROXY": "http://all:1"}) == "http://all:1"
    assert proxy_for("http", "gw", 80, {**env, "no_proxy": "gw"}) == ""
    assert proxy_for("http", "gw", 80, {}) == ""


def test_an_http_request_through_a_proxy(serve: Callable[[Script], Server]) -> None:
    proxy = serve(lambda _: (ok(b"via proxy"), False))
    env = {"http_proxy": proxy.url.replace("http://", "http://us%40r:p%3Ass@")}
    transport = HTTPTransport(environ=env)
    assert get(transport, "http://gateway.invalid:12080/healthz?x=1").read() == b"via proxy"
    head = proxy.heads[0]
    assert head.startswith(b"GET http://gateway.invalid:12080/healthz?x=1 HTTP/1.1\r\n")
    assert b"host: gateway.invalid:12080\r\n" in head
    # Basic base64("us@r:p:ss")
    assert b"proxy-authorization: Basic dXNAcjpwOnNz\r\n" in head


def test_https_through_a_proxy_tunnels(serve: Callable[[Script], Server]) -> None:
    """The proxy is asked for a CONNECT tunnel; one that refuses is a connect error."""
    proxy = serve(lambda _: (b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n", True))
    env = {"HTTPS_PROXY": proxy.url.replace("http://", "http://u:p@")}
    with pytest.raises(ConnectError, match="refused the tunnel: 403 Forbidden"):
        get(HTTPTransport(environ=env), "https://[::1]:8443/healthz")
    assert proxy.heads[0].startswith(b"CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\n")
    assert b"Proxy-Authorization: Basic dTpw\r\n" in proxy.heads[0]
    with pytest.raises(ConnectError, match="only http:// proxies"):
        get(HTTPTransport(environ={"all_proxy": "socks5://p:1080"}), "http://gw/")


def test_the_client_maps_transport_failures_to_gateway_errors(
    serve: Callable[[Script], Server],
) -> None:
    server = serve(lambda _: (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", True))
    with (
        GatewayClient(server.url) as client,
        pytest.raises(GatewayError, match=r"talking to the gateway at .* failed"),
    ):
        client.healthz()


def _closes_on_second(method: bytes) -> Script:
    """Answers the first request and keeps the connection; takes the second on it and
    closes without answering (a server going away mid-request); answers the rest."""
    seen = []

    def script(request: bytes) -> tuple[bytes, bool]:
        seen.append(request)
        if len(seen) == 2:
            assert request.startswith(method)
            return b"", True
        return ok(), False

    return script


def test_a_post_is_never_sent_twice(serve: Callable[[Script], Server]) -> None:
    """The server took the POST and closed without answering: it may have made the
    task. Sending it again could make a second one, so the failure is reported."""
    server = serve(_closes_on_second(b"POST"))
    transport = HTTPTransport(environ={})
    assert get(transport, server.url).read() == b"ok"
    with pytest.raises(RemoteProtocolError, match="without answering"):
        transport.handle_request(Request("POST", server.url, content=b"{}"))
    assert len(server.heads) == 2


def test_a_get_is_sent_again_on_a_new_connection(serve: Callable[[Script], Server]) -> None:
    server = serve(_closes_on_second(b"GET"))
    transport = HTTPTransport(environ={})
    assert get(transport, server.url).read() == b"ok"
    assert get(transport, server.url).read() == b"ok"
    assert len(server.heads) == 3 and server.connections == 2


def test_a_closed_idle_connection_is_seen_before_a_post(
    serve: Callable[[Script], Server],
) -> None:
    """The server closed the kept connection (its keep-alive timeout): the check before
    reuse sees it, so even a POST goes out once, on a new connection."""
    server = serve(lambda _: (ok(), True))
    transport = HTTPTransport(environ={})
    assert get(transport, server.url).read() == b"ok"
    deadline = time.monotonic() + 5
    while server.connections < 1 or not _closed(transport):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    resp = transport.handle_request(Request("POST", server.url, content=b"{}"))
    assert resp.read() == b"ok"
    assert len(server.heads) == 2 and server.connections == 2


def _closed(transport: HTTPTransport) -> bool:
    (conn,) = transport._idle.values()
    return conn.gone()
