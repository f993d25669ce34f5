"""Address parsing and configuration checks."""

from __future__ import annotations

import pytest

from cynode.proxy import ConfigError, ListenAddress, ProxyConfig, parse_listen, parse_upstream


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:11434", ListenAddress("127.0.0.1", 11434)),
        (":8080", ListenAddress("127.0.0.1", 8080)),
        ("[::1]:11434", ListenAddress("::1", 11434)),
        ("0.0.0.0:0", ListenAddress("0.0.0.0", 0)),
        ("unix:/run/cynode/p.sock", ListenAddress(unix_path="/run/cynode/p.sock")),
    ],
)
def test_parse_listen(text: str, expected: ListenAddress) -> None:
    assert parse_listen(text) == expected
    assert parse_listen(str(expected)) == expected


@pytest.mark.parametrize(
    "text", ["11434", "host:notaport", "host:70000", "[::1]11434", "unix:relative.sock"]
)
def test_parse_listen_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_listen(text)


@pytest.mark.parametrize(
    ("text", "base", "unix_path"),
    [
        ("http://127.0.0.1:11434", "http://127.0.0.1:11434", None),
        ("http://ollama:11434/", "http://ollama:11434", None),
        ("https://[::1]:443", "https://[::1]:443", None),
        ("unix:/run/ollama.sock", "http://localhost", "/run/ollama.sock"),
        ("http+unix://%2Frun%2Fr.sock", "http://localhost", "/run/r.sock"),
    ],
)
def test_parse_upstream(text: str, base: str, unix_path: str | None) -> None:
    upstream = parse_upstream(text)
    assert upstream.base_url == base
    assert upstream.unix_path == unix_path
    assert str(upstream) == (f"unix:{unix_path}" if unix_path else base)


@pytest.mark.parametrize(
    "text",
    [
        "ftp://host:21",
        "127.0.0.1:11434",
        "http://host:1/api",
        "http://host:1?x=1",
        "http://user:pw@host:1",
        "unix:relative",
        "http+unix://relative.sock",
    ],
)
def test_parse_upstream_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_upstream(text)


def test_credentials_in_upstream_url_are_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        parse_upstream("http://user:hunter2@host:1")
    assert "hunter2" not in str(info.value)


def test_config_defaults_and_checks() -> None:
    upstream = parse_upstream("http://127.0.0.1:1")
    config = ProxyConfig(upstream=upstream)
    assert config.max_body_bytes == 10 * 1024 * 1024
    assert config.timeout == 120.0
    assert config.stream_idle_timeout == 120.0
    assert str(config.listen[0]) == "127.0.0.1:11434"
    assert ProxyConfig(upstream=upstream, idle_timeout=5).stream_idle_timeout == 5
    assert config.max_in_flight == 0
    bad_ones = (
        {"listen": ()},
        {"max_body_bytes": -1},
        {"timeout": 0},
        {"idle_timeout": -1},
        {"max_in_flight": -1},
    )
    for bad in bad_ones:
        with pytest.raises(ConfigError):
            ProxyConfig(upstream=upstream, **bad)  # type: ignore[arg-type]
