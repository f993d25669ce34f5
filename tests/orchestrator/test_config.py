from __future__ import annotations

import stat
from pathlib import Path

import pytest

from cynode.orchestrator.config import Settings, SettingsError, load_settings, settings_help


def test_defaults_are_the_documented_ones(tmp_path: Path) -> None:
    s = load_settings(env={})
    assert (s.gateway_rest_port, s.gateway_grpc_port) == (12080, 12081)
    assert (s.control_rest_port, s.control_grpc_port) == (12082, 12083)
    assert s.host == "127.0.0.1" and s.require_inference and not s.dev
    assert s.access_token_ttl_seconds == 900 and s.refresh_token_ttl_seconds == 7 * 86400
    assert s.effective_database_url.startswith("sqlite+aiosqlite:///")
    assert s.effective_database_url.endswith("var/orchestrator/cynode.db")


def test_yaml_then_env_then_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "o.yaml"
    cfg.write_text(
        "gateway_rest_port: 1000\ngateway_grpc_port: 1001\nrequire_inference: false\n"
        f"data_dir: {tmp_path}\n"
    )
    env = {"CYNODE_GATEWAY_GRPC_PORT": "2001", "ADMIN_PASSWORD": "pw", "CYNODE_DEV": "yes"}
    s = load_settings(cfg, env=env, gateway_rest_port=None, host="::1")
    assert s.gateway_rest_port == 1000 and s.gateway_grpc_port == 2001
    assert not s.require_inference and s.dev and s.host == "::1"
    assert s.admin_password == "pw" and "pw" not in repr(s)
    assert s.data_dir == tmp_path
    s = load_settings(cfg, env=env, gateway_rest_port=3000)
    assert s.gateway_rest_port == 3000
    assert load_settings(
        env={"CYNODE_DATABASE_URL": "postgresql://x/y"}
    ).effective_database_url == ("postgresql://x/y")


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[1, 2]", {}, "mapping"),
        ("bogus: 1", {}, "unknown settings"),
        (": : :", {}, "not valid YAML"),
        ("", {"CYNODE_GATEWAY_REST_PORT": "abc"}, "integer"),
        ("", {"CYNODE_GATEWAY_REST_PORT": "70000"}, "port"),
        ("", {"CYNODE_ACCESS_TOKEN_TTL": "0"}, "positive"),
        ("", {"CYNODE_REQUIRE_INFERENCE": "maybe"}, "true or false"),
        ("", {"CYNODE_LISTEN_HOST": "0.0.0.0"}, "TLS"),
        ("", {"CYNODE_TLS_CERT": "/x"}, "go together"),
        ("", {"CYNODE_LOG_LEVEL": "loud"}, "log_level"),
    ],
)
def test_bad_settings_are_refused(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(SettingsError, match=message):
        load_settings(cfg, env=env)


def test_missing_config_file_and_insecure_override(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(tmp_path / "nope.yaml", env={})
    s = load_settings(env={"CYNODE_LISTEN_HOST": "0.0.0.0", "CYNODE_INSECURE": "1"})
    assert s.insecure and not s.tls_enabled
    s = load_settings(
        env={"CYNODE_LISTEN_HOST": "0.0.0.0", "CYNODE_TLS_CERT": "/c", "CYNODE_TLS_KEY": "/k"}
    )
    assert s.tls_enabled and s.tls_cert == Path("/c")


def test_jwt_secret_generated_once_with_mode_0600(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path / "d")
    first = s.resolve_jwt_secret()
    assert len(first) >= 32 and s.resolve_jwt_secret() == first
    path = tmp_path / "d" / "jwt_secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Settings(data_dir=tmp_path, jwt_secret="given-secret").resolve_jwt_secret() == (
        "given-secret"
    )
    # An empty file (a crash mid-write) is not a secret: a new one is made.
    path.write_text("")
    fresh = Settings(data_dir=tmp_path / "d").resolve_jwt_secret()
    assert fresh and fresh != first and path.read_text() == fresh


def test_help_names_every_env_variable() -> None:
    text = settings_help()
    for name in (
        "CYNODE_DATA_DIR",
        "CYNODE_DATABASE_URL",
        "ADMIN_PASSWORD",
        "NODE_PSK",
        "CYNODE_JWT_SECRET",
        "CYNODE_REQUIRE_INFERENCE",
        "CYNODE_GATEWAY_REST_PORT",
        "CYNODE_CONTROL_GRPC_PORT",
    ):
        assert name in text
