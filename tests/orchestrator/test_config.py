from __future__ import annotations

import stat
from dataclasses import fields
from pathlib import Path

import pytest

from cynode.orchestrator.config import (
    CONFIG_ENV,
    ControlPlaneOptions,
    Settings,
    SettingsError,
    load_settings,
    options_of,
    settables,
    settings_help,
)
from cynode.orchestrator.controlplane.settings import ControlPlaneSettings


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
        "CYNODE_SANDBOX_MEMORY_MB",
        "CYNODE_ORCHESTRATOR_CONFIG",
    ):
        assert name in text


def test_control_plane_defaults_are_unchanged() -> None:
    cp = load_settings(env={}).control_plane
    assert (cp.sandbox_image, cp.memory_mb, cp.cpus, cp.pids) == (
        "localhost/cynode-sandbox",
        1024,
        1.0,
        256,
    )
    assert (cp.default_timeout_seconds, cp.max_timeout_seconds) == (3600, 10800)
    assert (cp.max_output_bytes, cp.max_request_bytes) == (262144, 10 * 1024 * 1024)
    assert cp.inference_enabled and cp.allowed_models == () and cp.default_model == ""
    assert (cp.lease_seconds, cp.heartbeat_seconds, cp.max_attempts) == (30, 10, 3)
    assert (cp.stale_heartbeats, cp.claim_batch, cp.node_jwt_ttl_seconds) == (3, 512, 86400)


def test_control_plane_settings_from_yaml_sections_then_env(tmp_path: Path) -> None:
    cfg = tmp_path / "o.yaml"
    cfg.write_text(
        "sandbox: {memory_mb: 512, pids: 64, cpus: 0.5, image: localhost/other,\n"
        "          default_timeout_seconds: 60, max_timeout_seconds: 120}\n"
        "inference: {enabled: false, allowed_models: [a, b]}\n"
        "constraints: {max_request_bytes: 4096}\n"
        "scheduler: {max_attempts: 5}\n"
        "lease_seconds: 20\n"
    )
    cp = load_settings(cfg, env={}).control_plane
    assert (cp.memory_mb, cp.pids, cp.cpus, cp.sandbox_image) == (512, 64, 0.5, "localhost/other")
    assert (cp.default_timeout_seconds, cp.max_timeout_seconds) == (60, 120)
    assert not cp.inference_enabled and cp.allowed_models == ("a", "b")
    assert (cp.max_request_bytes, cp.max_attempts, cp.lease_seconds) == (4096, 5, 20)
    env = {
        "CYNODE_SANDBOX_MEMORY_MB": "96",
        "CYNODE_INFERENCE_ALLOWED_MODELS": "x, y",
        "CYNODE_SANDBOX_MAX_OUTPUT_BYTES": "100",
    }
    cp = load_settings(cfg, env=env).control_plane
    assert (cp.memory_mb, cp.pids, cp.max_output_bytes) == (96, 64, 100)
    assert cp.allowed_models == ("x", "y")


def test_the_config_file_can_be_named_by_env(tmp_path: Path) -> None:
    cfg = tmp_path / "o.yaml"
    cfg.write_text("sandbox: {pids: 7}\n")
    assert load_settings(env={CONFIG_ENV: str(cfg)}).control_plane.pids == 7
    other = tmp_path / "p.yaml"
    other.write_text("sandbox: {pids: 9}\n")
    # --config wins over the env's file.
    assert load_settings(other, env={CONFIG_ENV: str(cfg)}).control_plane.pids == 9


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("", {"CYNODE_SANDBOX_MEMORY_MB": "3"}, r"sandbox.memory_mb \(CYNODE_SANDBOX_MEMORY_MB\)"),
        ("", {"CYNODE_SANDBOX_CPUS": "lots"}, "CYNODE_SANDBOX_CPUS must be a number"),
        ("", {"CYNODE_SANDBOX_CPUS": "0"}, "sandbox.cpus .* at least 0.01"),
        ("sandbox: {pids: yes}\n", {}, "sandbox.pids in .* must be a number"),
        ("sandbox: {pids: 0}\n", {}, r"sandbox.pids \(CYNODE_SANDBOX_PIDS\) must be positive"),
        ("sandbox: {bogus: 1}\n", {}, "unknown settings in .*: sandbox.bogus"),
        ("inference: {allowed_models: 3}\n", {}, "inference.allowed_models in .* list"),
        ("inference: {enabled: maybe}\n", {}, "inference.enabled in .* true or false"),
        (
            "sandbox: {default_timeout_seconds: 200, max_timeout_seconds: 100}\n",
            {},
            "sandbox.default_timeout_seconds must not exceed sandbox.max_timeout_seconds",
        ),
        ("", {"CYNODE_HEARTBEAT_SECONDS": "30"}, "heartbeat_seconds must be shorter"),
    ],
)
def test_bad_control_plane_settings_name_the_setting(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(SettingsError, match=message):
        load_settings(cfg, env=env)


def test_every_setting_has_its_own_key_env_and_field() -> None:
    items = [item for _, item in settables(Settings())]
    assert len(items) == 47  # 24 orchestrator + 23 control plane
    for attribute in ("key", "env"):
        names = [getattr(item.setting, attribute) for item in items]
        assert len(names) == len(set(names)), attribute
    assert len({item.field.name for item in items}) == len(items)
    # Everything but the nested options is reachable.
    reachable = {item.field.name for item in items}
    assert {f.name for f in fields(Settings)} - reachable == {"control_plane"}
    assert {f.name for f in fields(ControlPlaneOptions)} <= reachable


def test_the_control_plane_gets_the_operators_options() -> None:
    options = load_settings(env={"CYNODE_SANDBOX_PIDS": "12"}).control_plane
    cp = ControlPlaneSettings(**options_of(options), psk="p", jwt_secret="s")
    assert cp.pids == 12 and cp.memory_mb == options.memory_mb
    assert cp.stale_after_seconds == 30.0
