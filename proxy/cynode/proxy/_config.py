"""Proxy configuration: where to listen, where to forward, and the guard limits.

Addresses are written the way operators type them: ``127.0.0.1:11434``, ``[::1]:11434``,
``unix:/run/cynode/inference.sock`` for listeners, and ``http://host:port``,
``unix:/path/sock`` or ``http+unix://%2Fpath%2Fsock`` for the upstream (the last form
is the one the sandbox sees in ``INFERENCE_PROXY_URL``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from urllib.parse import unquote, urlsplit

DEFAULT_LISTEN = "127.0.0.1:11434"
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
DEFAULT_TIMEOUT_SECONDS = 120.0
DEFAULT_SHUTDOWN_TIMEOUT_SECONDS = 2.0


class ConfigError(ValueError):
    """An address or limit that cannot be used."""


SETTING = "setting"


@dataclass(frozen=True)
class Setting:
    """How an operator reaches one ProxyConfig field (its flag and env variable);
    declared once, as field metadata, for the CLI and docs/settings.md."""

    key: str
    env: str
    help: str
    shown_default: str = ""


def setting(key: str, env: str, help: str, shown_default: str = "") -> dict[str, Setting]:
    return {SETTING: Setting(key, env, help, shown_default)}


@dataclass(frozen=True)
class ListenAddress:
    """One listener: a TCP host and port, or a Unix socket path (``unix_path`` set)."""

    host: str = ""
    port: int = 0
    unix_path: str | None = None

    def __str__(self) -> str:
        if self.unix_path is not None:
            return f"unix:{self.unix_path}"
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Upstream:
    """Where requests go: ``base_url`` for TCP, or ``unix_path`` with a dummy host."""

    base_url: str
    unix_path: str | None = None

    def __str__(self) -> str:
        if self.unix_path is not None:
            return f"unix:{self.unix_path}"
        return self.base_url


def parse_listen(text: str) -> ListenAddress:
    """Parse ``host:port``, ``[v6]:port``, ``:port`` (loopback) or ``unix:/path``."""
    text = text.strip()
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if not path.startswith("/"):
            raise ConfigError(f"unix listener needs an absolute path: {text!r}")
        return ListenAddress(unix_path=path)
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise ConfigError(f"bad listen address: {text!r}")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ConfigError(f"listen address needs a port: {text!r}")
    return ListenAddress(host=host or "127.0.0.1", port=_port(port_text, text))


def parse_upstream(text: str) -> Upstream:
    """Parse ``http(s)://host:port``, ``unix:/path`` or ``http+unix://<encoded path>``."""
    text = text.strip()
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if not path.startswith("/"):
            raise ConfigError(f"unix upstream needs an absolute path: {text!r}")
        return Upstream(base_url="http://localhost", unix_path=path)
    parts = urlsplit(text)
    if parts.scheme == "http+unix":
        path = unquote(parts.netloc)
        if not path.startswith("/"):
            raise ConfigError(f"http+unix upstream needs an encoded absolute path: {text!r}")
        return Upstream(base_url="http://localhost", unix_path=path)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"upstream must be http(s)://host:port or unix:/path: {text!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"upstream must not carry a path or query: {text!r}")
    if parts.username or parts.password:
        # A credential in the URL would be sent upstream on every request.
        raise ConfigError("upstream URL must not carry credentials")
    return Upstream(base_url=f"{parts.scheme}://{parts.netloc}")


def _port(port_text: str, whole: str) -> int:
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"bad port in listen address: {whole!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"port out of range in listen address: {whole!r}")
    return port


@dataclass(frozen=True)
class ProxyConfig:
    """Everything one proxy instance needs.

    ``timeout`` bounds the wait for the upstream's response head (connect, sending the
    request body, and the upstream thinking) and answers 504 when it passes.
    ``idle_timeout`` (default: ``timeout``) bounds the silence between two chunks once
    the response is streaming, and equally a client that stops reading for that long;
    when it passes the client connection is cut, because the status line has already
    been sent. There is deliberately no total limit on a stream:
    a long generation that keeps producing tokens is legitimate.
    """

    upstream: Upstream = field(
        metadata=setting(
            "--upstream",
            "CYNODE_PROXY_UPSTREAM",
            "where requests go: http://host:port, unix:/path or http+unix://<encoded path>",
            "(required)",
        )
    )
    listen: tuple[ListenAddress, ...] = field(
        default_factory=lambda: (parse_listen(DEFAULT_LISTEN),),
        metadata=setting(
            "--listen",
            "CYNODE_PROXY_LISTEN",
            "host:port, [v6]:port or unix:/path; the flag repeats, the env is comma-separated",
            DEFAULT_LISTEN,
        ),
    )
    max_body_bytes: int = field(
        default=DEFAULT_MAX_BODY_BYTES,
        metadata=setting(
            "--max-body-bytes", "CYNODE_PROXY_MAX_BODY_BYTES", "request body cap, 413 beyond it"
        ),
    )
    timeout: float = field(
        default=DEFAULT_TIMEOUT_SECONDS,
        metadata=setting(
            "--timeout",
            "CYNODE_PROXY_TIMEOUT",
            "wait for the upstream's response head, 504 beyond it (seconds)",
        ),
    )
    idle_timeout: float | None = field(
        default=None,
        metadata=setting(
            "--idle-timeout",
            "CYNODE_PROXY_IDLE_TIMEOUT",
            "longest silence between streamed chunks before the stream is cut (seconds)",
            "(--timeout)",
        ),
    )
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT_SECONDS
    unix_socket_mode: int = 0o666
    # Requests forwarded at once (0: no bound); more wait for a turn. A cold job's proxy
    # (a child of the node's proxy host) sets it: the host's memory and pids limits are
    # shared by every cold job's child, where a sidecar had its own (SPEC §4.8).
    max_in_flight: int = 0

    def __post_init__(self) -> None:
        if not self.listen:
            raise ConfigError("at least one listen address is needed")
        if self.max_body_bytes < 0:
            raise ConfigError("max_body_bytes must be >= 0")
        if self.max_in_flight < 0:
            raise ConfigError("max_in_flight must be >= 0")
        if self.timeout <= 0 or (self.idle_timeout is not None and self.idle_timeout <= 0):
            raise ConfigError("timeouts must be > 0")

    @property
    def stream_idle_timeout(self) -> float:
        return self.timeout if self.idle_timeout is None else self.idle_timeout


# ProxyConfig field -> the env variable the CLI reads for it.
ENV: dict[str, str] = {
    f.name: f.metadata[SETTING].env for f in fields(ProxyConfig) if SETTING in f.metadata
}


def config_to_json(config: ProxyConfig) -> str:
    """The config as the node hands it to the proxy host with a job's sockets (_host.py)."""
    import json  # here: the sidecar's start does without it

    return json.dumps(
        {
            "upstream": str(config.upstream),
            "listen": [str(listen) for listen in config.listen],
            "max_body_bytes": config.max_body_bytes,
            "timeout": config.timeout,
            "idle_timeout": config.idle_timeout,
            "shutdown_timeout": config.shutdown_timeout,
            "max_in_flight": config.max_in_flight,
        }
    )


def config_from_json(text: str | bytes) -> ProxyConfig:
    """ConfigError when the text is no config `config_to_json` could have written."""
    import json

    try:
        data = json.loads(text)
        return ProxyConfig(
            upstream=parse_upstream(data["upstream"]),
            listen=tuple(parse_listen(item) for item in data["listen"]),
            max_body_bytes=int(data["max_body_bytes"]),
            timeout=float(data["timeout"]),
            idle_timeout=None if data["idle_timeout"] is None else float(data["idle_timeout"]),
            shutdown_timeout=float(data["shutdown_timeout"]),
            max_in_flight=int(data["max_in_flight"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"bad proxy config: {exc}") from None
