"""Orchestrator settings: documented defaults, overridden by a YAML file, then by env.

Precedence (last wins): built-in default < YAML file (`--config`) < environment.
Secrets (`ADMIN_PASSWORD`, `NODE_PSK`, the JWT secret) are read here and handed on,
never printed: `Settings.__repr__` hides them.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from cynode.orchestrator.store import default_sqlite_url

JWT_SECRET_FILE = "jwt_secret"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


class SettingsError(ValueError):
    """A setting has a value the orchestrator cannot start with."""


@dataclass(frozen=True)
class SettingDoc:
    name: str
    env: str
    default: str
    help: str


# One line per setting: the YAML key, its env variable, the default, what it does.
# `cynode-orchestrator serve --help` prints this table.
SETTINGS_DOC: tuple[SettingDoc, ...] = (
    SettingDoc(
        "data_dir",
        "CYNODE_DATA_DIR",
        "./var/orchestrator",
        "state directory (SQLite file, generated JWT secret)",
    ),
    SettingDoc(
        "database_url",
        "CYNODE_DATABASE_URL",
        "sqlite:///<data_dir>/cynode.db",
        "postgresql://... or sqlite:///...; `?search_path=` picks a Postgres schema",
    ),
    SettingDoc("host", "CYNODE_LISTEN_HOST", "127.0.0.1", "address every listener binds"),
    SettingDoc("gateway_rest_port", "CYNODE_GATEWAY_REST_PORT", "12080", "user gateway REST"),
    SettingDoc("gateway_grpc_port", "CYNODE_GATEWAY_GRPC_PORT", "12081", "user gateway gRPC"),
    SettingDoc("control_rest_port", "CYNODE_CONTROL_REST_PORT", "12082", "control plane REST"),
    SettingDoc("control_grpc_port", "CYNODE_CONTROL_GRPC_PORT", "12083", "control plane gRPC"),
    SettingDoc(
        "admin_password",
        "ADMIN_PASSWORD",
        "(none)",
        "password of the bootstrap user `admin`, created on first start; required unless --dev",
    ),
    SettingDoc("node_psk", "NODE_PSK", "(none)", "pre-shared key nodes register with"),
    SettingDoc(
        "jwt_secret",
        "CYNODE_JWT_SECRET",
        "(generated)",
        "HS256 signing secret; when unset, generated once into <data_dir>/jwt_secret (0600)",
    ),
    SettingDoc(
        "access_token_ttl_seconds",
        "CYNODE_ACCESS_TOKEN_TTL",
        "900",
        "access token lifetime (15 min)",
    ),
    SettingDoc(
        "refresh_token_ttl_seconds",
        "CYNODE_REFRESH_TOKEN_TTL",
        "604800",
        "refresh token lifetime (7 days)",
    ),
    SettingDoc(
        "login_max_failures",
        "CYNODE_LOGIN_MAX_FAILURES",
        "5",
        "failed logins per client or per handle before 429",
    ),
    SettingDoc(
        "login_window_seconds",
        "CYNODE_LOGIN_WINDOW",
        "300",
        "window over which failed logins are counted",
    ),
    SettingDoc(
        "require_inference",
        "CYNODE_REQUIRE_INFERENCE",
        "true",
        "readyz needs an inference-capable node; false for sandbox-only deployments",
    ),
    SettingDoc("tls_cert", "CYNODE_TLS_CERT", "(none)", "server certificate (PEM)"),
    SettingDoc("tls_key", "CYNODE_TLS_KEY", "(none)", "server key (PEM)"),
    SettingDoc(
        "node_client_ca",
        "CYNODE_NODE_CLIENT_CA",
        "(none)",
        "mTLS for nodes: the control plane accepts only client certificates this CA issued",
    ),
    SettingDoc(
        "insecure",
        "CYNODE_INSECURE",
        "false",
        "allow plain text on a non-loopback address (--insecure)",
    ),
    SettingDoc(
        "default_model",
        "CYNODE_DEFAULT_MODEL",
        "(node's first model)",
        "model prompt tasks use when they name none; empty lets each node pick its first",
    ),
    SettingDoc(
        "lease_seconds",
        "CYNODE_LEASE_SECONDS",
        "30",
        "how long a node holds a job without a heartbeat before it is requeued",
    ),
    SettingDoc(
        "heartbeat_seconds",
        "CYNODE_HEARTBEAT_SECONDS",
        "10",
        "how often nodes send heartbeats on their dispatch stream",
    ),
    SettingDoc("dev", "CYNODE_DEV", "false", "development mode (--dev): generated admin password"),
    SettingDoc("log_level", "CYNODE_LOG_LEVEL", "info", "debug, info, warning, error"),
)

_INT_FIELDS = {
    "gateway_rest_port",
    "gateway_grpc_port",
    "control_rest_port",
    "control_grpc_port",
    "access_token_ttl_seconds",
    "refresh_token_ttl_seconds",
    "login_max_failures",
    "login_window_seconds",
    "lease_seconds",
    "heartbeat_seconds",
}
_BOOL_FIELDS = {"require_inference", "insecure", "dev"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def default_data_dir() -> Path:
    return Path("./var/orchestrator")


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(default_factory=default_data_dir)
    database_url: str = ""
    host: str = "127.0.0.1"
    gateway_rest_port: int = 12080
    gateway_grpc_port: int = 12081
    control_rest_port: int = 12082
    control_grpc_port: int = 12083
    admin_password: str | None = field(default=None, repr=False)
    node_psk: str | None = field(default=None, repr=False)
    jwt_secret: str | None = field(default=None, repr=False)
    access_token_ttl_seconds: int = 15 * 60
    refresh_token_ttl_seconds: int = 7 * 24 * 3600
    login_max_failures: int = 5
    login_window_seconds: int = 300
    require_inference: bool = True
    default_model: str = ""
    lease_seconds: int = 30
    heartbeat_seconds: int = 10
    tls_cert: Path | None = None
    tls_key: Path | None = None
    node_client_ca: Path | None = None
    insecure: bool = False
    dev: bool = False
    log_level: str = "info"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or default_sqlite_url(self.data_dir)

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert is not None and self.tls_key is not None

    @property
    def plain_text_exposed(self) -> bool:
        """Plain text on an address other hosts can reach (allowed only with --insecure)."""
        return self.host not in LOOPBACK_HOSTS and not self.tls_enabled

    def check(self) -> None:
        """Refuses combinations the orchestrator must not start with."""
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if name.endswith("_port"):
                if not 0 <= value <= 65535:
                    raise SettingsError(f"{name} must be a port number, got {value}")
            elif value <= 0:
                raise SettingsError(f"{name} must be positive, got {value}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise SettingsError("CYNODE_TLS_CERT and CYNODE_TLS_KEY go together")
        if self.plain_text_exposed and not self.insecure:
            raise SettingsError(
                f"listening on {self.host} needs CYNODE_TLS_CERT and CYNODE_TLS_KEY "
                "(or --insecure for plain text)"
            )
        if self.node_client_ca is not None and not self.tls_enabled:
            raise SettingsError("CYNODE_NODE_CLIENT_CA (mTLS for nodes) needs TLS certificates")
        if self.log_level.lower() not in {"debug", "info", "warning", "error"}:
            raise SettingsError(
                f"log_level must be debug, info, warning or error: {self.log_level}"
            )

    def resolve_jwt_secret(self) -> str:
        """The signing secret: the configured one, else one generated once and kept in
        the data dir (mode 0600) so tokens survive restarts."""
        if self.jwt_secret:
            return self.jwt_secret
        path = self.data_dir / JWT_SECRET_FILE
        if path.exists():
            secret = path.read_text().strip()
            if secret:
                return secret
            path.unlink()  # empty: a crash between create and write
        self.data_dir.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(48)
        # O_EXCL: two replicas starting at once on a shared dir must agree on one secret.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_text().strip()
        with os.fdopen(fd, "w") as fh:
            fh.write(secret)
        return secret


def _convert(name: str, raw: Any) -> Any:
    if name in _INT_FIELDS:
        try:
            return int(raw)
        except (TypeError, ValueError) as exc:
            raise SettingsError(f"{name} must be an integer, got {raw!r}") from exc
    if name in _BOOL_FIELDS:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise SettingsError(f"{name} must be true or false, got {raw!r}")
    if name in {"data_dir", "tls_cert", "tls_key", "node_client_ca"}:
        return Path(str(raw)).expanduser() if raw not in (None, "") else None
    return None if raw is None else str(raw)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SettingsError(f"cannot read config file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise SettingsError(f"config file {path} is not valid YAML") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise SettingsError(f"config file {path} must hold a mapping of settings")
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(loaded) - known)
    if unknown:
        raise SettingsError(f"unknown settings in {path}: {', '.join(map(str, unknown))}")
    return loaded


def load_settings(
    config_file: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Settings from defaults, then the YAML file, then env, then explicit overrides
    (command-line flags). Overrides whose value is None are ignored."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    if config_file is not None:
        for key, raw in _read_yaml(config_file).items():
            values[key] = _convert(key, raw)
    for doc in SETTINGS_DOC:
        if doc.env in env:
            values[doc.name] = _convert(doc.name, env[doc.env])
    for key, raw in overrides.items():
        if raw is not None:
            values[key] = _convert(key, raw)
    if values.get("data_dir") is None:
        values.pop("data_dir", None)
    settings = replace(Settings(), **values)
    settings.check()
    return settings


def settings_help() -> str:
    width = max(len(d.env) for d in SETTINGS_DOC)
    lines = ["settings (YAML key / environment variable, default):"]
    for doc in SETTINGS_DOC:
        lines.append(f"  {doc.env:<{width}}  {doc.name} [{doc.default}]\n      {doc.help}")
    lines.append("Precedence: defaults < --config YAML < environment < command-line flags.")
    return "\n".join(lines)
