"""cynork's HTTP/1.1 client: the little of HTTP the gateway's REST surface needs.

Why not httpx (what cynork used before) or `http.client`: a cynork command is one short
process, and its imports were most of its time. httpx with httpcore is ~60 % of a
start's imports (it loads `urllib.request`, `http.cookiejar` and `email` at module
level); `http.client` alone still loads `email` to parse headers (~30 ms of CPU here).
This module needs `_socket` (the `socket` module's C half: its Python half costs ~3 ms
more) and, for https only, `ssl` (docs/fast-path.md §7a).

What it does: one keep-alive connection per origin, reused by the requests of one
command, checked before reuse, and for an idempotent request opened again once when a
reused connection turns out closed before any answer; bodies by Content-Length,
chunked, or to the end of the connection, read whole or as they arrive (the NDJSON
watch stream, the chat's server-sent events, downloads); connect and read timeouts;
TLS with the CA file given, else the system's store (SPEC §1.3; OpenSSL reads
SSL_CERT_FILE/SSL_CERT_DIR for it; httpx used certifi's bundle instead); proxies from
the environment (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY, as httpx read them),
https through a CONNECT tunnel. What it does not: redirects (httpx was not told to
follow them either), cookies, compressed bodies (it asks for none), HTTP/2, SOCKS
proxies (refused with a message).

`Transport` is the seam: `HTTPTransport` speaks to sockets, `MockTransport` hands each
request to a function (the tests' fake gateway)."""

from __future__ import annotations

import _socket
import codecs
import json as _json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import ssl

USER_AGENT = "cynork"
# One read from the socket at most this much: a download's blocks as the socket gives them.
BLOCK = 64 * 1024
# The longest status, header or chunk-size line, and the most header lines, accepted.
MAX_LINE = 64 * 1024
MAX_HEADERS = 200
# Methods a server may see twice with no other effect (RFC 9110 §9.2.2).
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


# -- URLs ----------------------------------------------------------------------------------
# The URLs every command makes (`http://127.0.0.1:12080/v1/tasks/<id>/watch?k=v`: an
# http(s) scheme in lower case, a plain host, a port of digits, plain characters after)
# are split here; any other goes to urllib.parse, so the answer is urllib's either way
# (tests/cynork/test_urls.py compares them). urllib.parse imports ipaddress: ~1.5 ms of
# CPU on every start, for URLs that need neither (docs/fast-path.md §7b).

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PLAIN_HOST = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.")
_PLAIN_REST = _UNRESERVED | frozenset("/?=&")


class SplitURL:
    """What cynork reads of `urllib.parse.urlsplit(url)`, under the same names."""

    __slots__ = ("hostname", "netloc", "path", "port", "query", "scheme")

    def __init__(
        self,
        scheme: str,
        netloc: str,
        path: str,
        query: str,
        hostname: str | None,
        port: int | None,
    ) -> None:
        self.scheme = scheme
        self.netloc = netloc
        self.path = path
        self.query = query
        self.hostname = hostname
        self.port = port


def split_url(url: str) -> SplitURL:
    """`urlsplit(url)`'s scheme, netloc, path, query, hostname and port (a port out of
    range raises ValueError, as urllib's `port` does)."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("http", "https") and rest.isascii():
        ends = [i for i in (rest.find("/"), rest.find("?")) if i >= 0]
        cut = min(ends) if ends else len(rest)
        netloc, tail = rest[:cut], rest[cut:]
        host, colon, port = netloc.partition(":")
        if (
            host
            and _PLAIN_HOST.issuperset(host)
            and (not colon or (port.isdigit() and int(port) <= 65535))
            and _PLAIN_REST.issuperset(tail)
        ):
            path, _, query = tail.partition("?")
            return SplitURL(scheme, netloc, path, query, host, int(port) if colon else None)
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return SplitURL(parts.scheme, parts.netloc, parts.path, parts.query, parts.hostname, parts.port)


def quote_segment(text: str) -> str:
    """`urllib.parse.quote(text, safe="")`: one path segment (a task id, a name)."""
    if _UNRESERVED.issuperset(text):
        return text
    from urllib.parse import quote

    return quote(text, safe="")


def encode_query(params: Mapping[str, str | int]) -> str:
    """`urllib.parse.urlencode(params)`."""
    pairs = [(str(key), str(value)) for key, value in params.items()]
    if all(_UNRESERVED.issuperset(key + value) for key, value in pairs):
        return "&".join(f"{key}={value}" for key, value in pairs)
    from urllib.parse import urlencode

    return urlencode(params)


def _unquote(text: str) -> str:
    if "%" not in text:  # urllib's own shortcut, before its import
        return text
    from urllib.parse import unquote

    return unquote(text)


class TransportError(Exception):
    """The request did not get a whole answer: connect, write, read or protocol failure."""


class ConnectError(TransportError):
    pass


class TimeoutException(TransportError):
    pass


class ConnectTimeout(TimeoutException, ConnectError):
    pass


class ReadTimeout(TimeoutException):
    pass


class ReadError(TransportError):
    pass


class WriteError(TransportError):
    pass


class RemoteProtocolError(TransportError):
    pass


class _Stale(Exception):
    """The cause of a failure on a reused connection before any answer began: the
    server had closed it while idle, so sending again cannot repeat a request it saw."""


class Request:
    """One request: `url` is absolute; `target` is what the request line carries."""

    def __init__(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes = b"",
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self.method = method
        self.url = url
        parts = split_url(url)
        self.scheme = parts.scheme
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.netloc = parts.netloc.rpartition("@")[2]
        self.path = _unquote(parts.path) or "/"
        self.query = parts.query
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.headers = {key.lower(): value for key, value in (headers or {}).items()}
        self.content = content
        self.timeout = timeout
        self.connect_timeout = connect_timeout

    def read(self) -> bytes:
        return self.content


def encode_json(body: Any) -> bytes:
    # As httpx encoded a `json=` body: compact, UTF-8, no NaN.
    return _json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


class Response:
    """A status, lower-cased headers and a body read whole (`read`) or as it arrives
    (`iter_bytes`, `iter_lines`). Made by a transport, or by a test as
    `Response(404, json={...})`."""

    def __init__(
        self,
        status_code: int,
        *,
        reason: str = "",
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        text: str | None = None,
        json: Any = None,
        stream: Iterable[bytes] | None = None,
        on_close: Callable[[bool], None] | None = None,
    ) -> None:
        self.status_code = status_code
        self._reason = reason
        self.headers = {key.lower(): value for key, value in (headers or {}).items()}
        if json is not None:
            content = encode_json(json)
            self.headers.setdefault("content-type", "application/json")
        elif text is not None:
            content = text.encode()
            self.headers.setdefault("content-type", "text/plain; charset=utf-8")
        elif content is None and stream is None:
            content = b""
        self._content = content
        self._stream: Iterator[bytes] = iter(stream if stream is not None else ())
        # Told whether the body was read to its end (then the connection may be reused).
        self._on_close = on_close
        self._consumed = content is not None

    @property
    def reason_phrase(self) -> str:
        if not self._reason:
            from http import HTTPStatus  # only for a response made without a status line

            try:
                self._reason = HTTPStatus(self.status_code).phrase
            except ValueError:
                self._reason = ""
        return self._reason

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    def iter_bytes(self) -> Iterator[bytes]:
        """The body's blocks as they arrive (once); the whole body if already read."""
        if self._content is not None:
            if self._content:
                yield self._content
            return
        for block in self._stream:
            if block:
                yield block
        self._consumed = True
        self.close()

    def iter_lines(self) -> Iterator[str]:
        """The body's lines (without their ending) as they arrive."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        for block in self.iter_bytes():
            *lines, pending = (pending + decoder.decode(block)).split("\n")
            for line in lines:
                yield line.rstrip("\r")
        pending += decoder.decode(b"", final=True)
        if pending:
            yield pending.rstrip("\r")

    def read(self) -> bytes:
        if self._content is None:
            self._content = b"".join(self.iter_bytes())
        return self._content

    @property
    def content(self) -> bytes:
        return self.read()

    @property
    def text(self) -> str:
        charset = "utf-8"
        for param in self.headers.get("content-type", "").split(";")[1:]:
            key, _, value = param.strip().partition("=")
            if key.lower() == "charset" and value:
                charset = value.strip('"')
        try:
            return self.read().decode(charset, errors="replace")
        except LookupError:
            return self.read().decode("utf-8", errors="replace")

    def json(self) -> Any:
        return _json.loads(self.read())

    def close(self) -> None:
        """Ends the response; a body not read to its end closes the connection."""
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close(self._consumed)


class Transport(Protocol):
    def handle_request(self, request: Request) -> Response: ...

    def close(self) -> None: ...


class MockTransport:
    """Hands each request to `handler` (tests): its Response, or its TransportError."""

    def __init__(self, handler: Callable[[Request], Response]) -> None:
        self.handler = handler

    def handle_request(self, request: Request) -> Response:
        return self.handler(request)

    def close(self) -> None:
        pass


# -- proxies from the environment --------------------------------------------------------


def _bypassed(host: str, port: int, no_proxy: str) -> bool:
    """NO_PROXY as httpx read it: `*`, a host or address (with an optional port), or a
    domain (`.example.com` matches its subdomains, `example.com` itself and them)."""
    host = host.lower().strip("[]")
    for entry in (item.strip().lower() for item in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        if "://" in entry:
            entry = split_url(entry).netloc
        name, entry_port = entry, ""
        if entry.count(":") == 1 or (entry.startswith("[") and "]:" in entry):
            name, _, entry_port = entry.rpartition(":")
        if entry_port and entry_port != str(port):
            continue
        name = name.strip("[]")
        if host == name.lstrip(".") or host.endswith(name if name[:1] == "." else f".{name}"):
            return True
    return False


def proxy_for(scheme: str, host: str, port: int, environ: Mapping[str, str]) -> str:
    """The proxy URL the environment names for this origin, or ""."""
    no_proxy = environ.get("no_proxy") or environ.get("NO_PROXY") or ""
    if no_proxy and _bypassed(host, port, no_proxy):
        return ""
    for name in (f"{scheme}_proxy", "all_proxy"):
        # Lower case first, as urllib's getproxies (httpx's source) has it.
        value = environ.get(name) or environ.get(name.upper()) or ""
        if value:
            return value if "://" in value else f"http://{value}"
    return ""


def _basic_auth(userinfo: str) -> str:
    import base64

    user, _, password = userinfo.partition(":")
    raw = f"{_unquote(user)}:{_unquote(password)}"
    return "Basic " + base64.b64encode(raw.encode()).decode()


# -- the socket transport ------------------------------------------------------------------


class _Connection:
    """A socket (`_socket.socket`, or an `ssl.SSLSocket`) with the buffered reads HTTP
    needs: a line, or whatever arrived up to n bytes."""

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.used = False

    def close(self) -> None:
        self.sock.close()

    def readline(self) -> bytes:
        """The next line with its ending; at the connection's end, what is left."""
        start = 0
        while (end := self.buffer.find(b"\n", start)) < 0:
            if len(self.buffer) > MAX_LINE:
                raise RemoteProtocolError("the server sent a line longer than 64 KiB")
            start = len(self.buffer)
            data = self.sock.recv(BLOCK)
            if not data:
                end = len(self.buffer) - 1
                break
            self.buffer += data
        if end + 1 > MAX_LINE:
            raise RemoteProtocolError("the server sent a line longer than 64 KiB")
        line = bytes(self.buffer[: end + 1])
        del self.buffer[: end + 1]
        return line

    def gone(self) -> bool:
        """True when a kept connection cannot carry another request: the server closed
        it (or sent something unasked). Asked without waiting; an https connection
        cannot be asked (its bytes are TLS records) and counts as usable."""
        if self.buffer:
            return True
        timeout = self.sock.gettimeout()
        try:
            self.sock.settimeout(0)
            self.sock.recv(1, _socket.MSG_PEEK)
            return True  # b"": closed; anything else: sent unasked
        except BlockingIOError:
            return False  # nothing to read: open and idle
        except ValueError:
            return False  # an ssl socket: no flags on recv
        except OSError:
            return True
        finally:
            self.sock.settimeout(timeout)

    def read1(self, size: int) -> bytes:
        """Up to `size` bytes: what is buffered, else one read from the socket."""
        if not self.buffer:
            return self.sock.recv(size)
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data


def _open(host: str, port: int, timeout: float) -> _socket.socket:
    """A connected TCP socket to the first address of `host` that answers (what
    `socket.create_connection` does, without the `socket` module)."""
    try:
        name: str | bytes = host.encode("ascii")  # as bytes: no idna codec to load
    except UnicodeEncodeError:
        name = host
    failure: OSError | None = None
    for family, kind, proto, _, address in _socket.getaddrinfo(name, port, 0, _socket.SOCK_STREAM):
        sock = _socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
        except OSError as exc:
            sock.close()
            failure = exc
            continue
        return sock
    raise failure or OSError(f"no address for {host}")


def _read_head(conn: _Connection) -> tuple[str, int, str, dict[str, str]]:
    """(version, status, reason, lower-cased headers) of the next final answer."""
    while True:
        line = conn.readline()
        if not line:
            raise RemoteProtocolError("the server closed the connection without answering")
        version, _, rest = line.decode("latin-1").rstrip("\r\n").partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/") or not code.isdigit():
            raise RemoteProtocolError(f"not an HTTP status line: {line[:80]!r}")
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS):
            field = conn.readline().decode("latin-1")
            if field in ("\r\n", "\n", ""):
                break
            name, sep, value = field.partition(":")
            if not sep:
                raise RemoteProtocolError(f"not a header line: {field[:80]!r}")
            name, value = name.strip().lower(), value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        else:
            raise RemoteProtocolError("the server sent too many header lines")
        if 100 <= int(code) < 200:  # informational: the real answer follows
            continue
        return version, int(code), reason, headers


def _guarded(reader: Iterator[bytes], conn: _Connection) -> Iterator[bytes]:
    """A body reader whose socket failures are TransportErrors (the connection closed)."""
    try:
        yield from reader
    except TransportError:
        conn.close()
        raise
    except TimeoutError as exc:
        conn.close()
        raise ReadTimeout("the server stopped sending in the middle of an answer") from exc
    except OSError as exc:
        conn.close()
        raise ReadError(str(exc) or type(exc).__name__) from exc


def _read_exactly(conn: _Connection, size: int) -> Iterator[bytes]:
    left = size
    while left > 0:
        block = conn.read1(min(left, BLOCK))
        if not block:
            raise RemoteProtocolError("the server closed the connection in the middle of a body")
        left -= len(block)
        yield block


def _chunked(conn: _Connection) -> Iterator[bytes]:
    while True:
        line = conn.readline()
        try:
            size = int(line.split(b";")[0].strip(), 16)
        except ValueError:
            if not line:
                raise RemoteProtocolError("the server closed the connection mid-body") from None
            raise RemoteProtocolError(f"bad chunk size line {line[:40]!r}") from None
        if size == 0:
            while conn.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers: none the client uses
            return
        yield from _read_exactly(conn, size)
        conn.readline()  # the chunk's CRLF


def _to_end(conn: _Connection) -> Iterator[bytes]:
    while block := conn.read1(BLOCK):
        yield block


class HTTPTransport:
    """HTTP/1.1 over one kept-alive socket per origin (scheme, host, port)."""

    def __init__(
        self,
        *,
        ssl_context: Callable[[], ssl.SSLContext] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._make_context = ssl_context or default_ssl_context
        self._context: ssl.SSLContext | None = None
        self._environ = os.environ if environ is None else environ
        self._idle: dict[tuple[str, str, int], _Connection] = {}

    def close(self) -> None:
        idle, self._idle = self._idle, {}
        for conn in idle.values():
            conn.close()

    def handle_request(self, request: Request) -> Response:
        if request.scheme not in ("http", "https"):
            raise ConnectError(f"unsupported URL scheme {request.scheme!r}")
        proxy = proxy_for(request.scheme, request.host, request.port, self._environ)
        if proxy and split_url(proxy).scheme != "http":
            raise ConnectError(f"unsupported proxy {proxy!r}: only http:// proxies")
        key = (request.scheme, request.host, request.port)
        conn = self._idle.pop(key, None)
        if conn is not None and conn.gone():
            conn.close()
            conn = None
        if conn is not None:
            try:
                return self._exchange(conn, key, request, proxy)
            except TransportError as exc:
                # Closed by the server between `gone` and the send (or an https one):
                # sent again only where a second delivery cannot do harm. A POST the
                # server may have seen is never sent twice (one task, not two).
                again = isinstance(exc, WriteError) or request.method in IDEMPOTENT
                if not (isinstance(exc.__cause__, _Stale) and again):
                    raise
        return self._exchange(self._connect(request, proxy), key, request, proxy)

    def _connect(self, request: Request, proxy: str) -> _Connection:
        where = split_url(proxy) if proxy else None
        if where is not None:
            address = (where.hostname or "", where.port or 80)
        else:
            address = (request.host, request.port)
        try:
            sock = _open(*address, request.connect_timeout)
        except TimeoutError as exc:
            raise ConnectTimeout(str(exc) or "timed out") from exc
        except OSError as exc:
            raise ConnectError(str(exc) or type(exc).__name__) from exc
        try:
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            if request.scheme == "https":
                if where is not None:
                    self._tunnel(sock, request, where.netloc.rpartition("@")[0])
                if self._context is None:
                    self._context = self._make_context()
                import socket  # ssl wraps only its sockets (and loads the module anyway)

                plain = socket.socket(sock.family, sock.type, sock.proto, sock.detach())
                plain.settimeout(request.connect_timeout)
                sock = self._context.wrap_socket(plain, server_hostname=request.host)
        except TimeoutError as exc:
            sock.close()
            raise ConnectTimeout(str(exc) or "timed out") from exc
        except TransportError:
            sock.close()
            raise
        except OSError as exc:  # ssl.SSLError among them: a failed handshake
            sock.close()
            raise ConnectError(str(exc) or type(exc).__name__) from exc
        except BaseException:
            sock.close()
            raise
        return _Connection(sock)

    @staticmethod
    def _tunnel(sock: _socket.socket, request: Request, userinfo: str) -> None:
        host = f"[{request.host}]" if ":" in request.host else request.host
        authority = f"{host}:{request.port}"
        head = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
        if userinfo:
            head += f"Proxy-Authorization: {_basic_auth(userinfo)}\r\n"
        sock.sendall(f"{head}\r\n".encode("latin-1"))
        conn = _Connection(sock)
        _, status, reason, _ = _read_head(conn)  # the socket stays open: TLS goes on
        if not 200 <= status < 300:
            raise ConnectError(f"the proxy refused the tunnel: {status} {reason}")

    def _exchange(
        self, conn: _Connection, key: tuple[str, str, int], request: Request, proxy: str
    ) -> Response:
        reused, conn.used = conn.used, True
        try:
            conn.sock.settimeout(request.timeout)
            conn.sock.sendall(self._head(request, proxy) + request.content)
        except TimeoutError as exc:
            conn.close()
            raise ReadTimeout("timed out sending the request") from exc
        except OSError as exc:
            conn.close()
            raise WriteError(str(exc) or type(exc).__name__) from (_Stale() if reused else exc)
        try:
            version, status, reason, headers = _read_head(conn)
        except TimeoutError as exc:
            conn.close()
            raise ReadTimeout("the server did not answer in time") from exc
        except RemoteProtocolError as exc:
            conn.close()
            stale = reused and "without answering" in str(exc)
            raise RemoteProtocolError(str(exc)) from (_Stale() if stale else exc)
        except OSError as exc:
            conn.close()
            raise ReadError(str(exc) or type(exc).__name__) from (_Stale() if reused else exc)
        keep = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
        body: Iterator[bytes]
        if request.method == "HEAD" or status in (204, 304):
            body = iter(())
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = _chunked(conn)
        elif "content-length" in headers:
            try:
                size = int(headers["content-length"].split(",")[0])
            except ValueError:
                conn.close()
                raise RemoteProtocolError("bad Content-Length") from None
            body = _read_exactly(conn, size)
        else:  # only the connection's end delimits the body
            keep = False
            body = _to_end(conn)

        def release(whole: bool) -> None:
            if whole and keep and key not in self._idle:
                self._idle[key] = conn
            else:
                conn.close()

        return Response(
            status,
            reason=reason,
            headers=headers,
            stream=_guarded(body, conn),
            on_close=release,
        )

    @staticmethod
    def _head(request: Request, proxy: str) -> bytes:
        target = request.target
        headers = {"user-agent": USER_AGENT, "accept-encoding": "identity", **request.headers}
        if proxy and request.scheme == "http":
            target = f"http://{request.netloc}{request.target}"
            userinfo = split_url(proxy).netloc.rpartition("@")[0]
            if userinfo:
                headers["proxy-authorization"] = _basic_auth(userinfo)
        if request.content or request.method in ("POST", "PUT", "PATCH"):
            headers["content-length"] = str(len(request.content))
        lines = [f"{request.method} {target} HTTP/1.1", f"host: {request.netloc}"]
        for name, value in headers.items():
            if "\r" in value or "\n" in value:
                raise WriteError(f"header {name} holds a line break")
            lines.append(f"{name}: {value}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def default_ssl_context(ca_file: str | None = None) -> ssl.SSLContext:
    """A verifying client context: the CA file given, else the system's store (where
    OpenSSL looks, SSL_CERT_FILE and SSL_CERT_DIR honoured). Made on the first https
    connection only: loading a store costs tens of ms that a plain-http gateway has
    no use for."""
    import ssl

    return ssl.create_default_context(cafile=ca_file)
