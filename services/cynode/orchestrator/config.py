"""Orchestrator settings: documented defaults, overridden by a YAML file, then by env.

Precedence (last wins): built-in default < YAML file (`--config`, or the file
`CYNODE_ORCHESTRATOR_CONFIG` names) < environment < command-line flags. Each setting's
YAML key, env variable and meaning are declared once, as field metadata
(`settingmeta.setting`); the loader, `serve --help` and `docs/settings.md` read them.
Secrets (`ADMIN_PASSWORD`, `NODE_PSK`, the JWT secret) are read here and handed on,
never printed: `Settings.__repr__` hides them.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from cynode.orchestrator.settingmeta import (
    Settable,
    SettingsError,
    convert,
    flatten,
    settable,
    setting,
)
from cynode.orchestrator.store import default_sqlite_url

__all__ = [
    "CONFIG_ENV",
    "ControlPlaneOptions",
    "Settings",
    "SettingsError",
    "load_settings",
    "options_of",
    "settables",
    "settings_help",
]

JWT_SECRET_FILE = "jwt_secret"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
# The YAML file to read when `--config` names none.
CONFIG_ENV = "CYNODE_ORCHESTRATOR_CONFIG"


def default_data_dir() -> Path:
    return Path("./var/orchestrator")


@dataclass(frozen=True, kw_only=True)
class ControlPlaneOptions:
    """What an operator tunes in the control plane: the node config it issues (sandbox
    image, timeouts, limits, output cap, inference, constraints) and its scheduling.
    `ControlPlaneSettings` adds what the orchestrator derives (endpoints, secrets)."""

    lease_seconds: int = field(
        default=30,
        metadata=setting(
            "lease_seconds",
            "CYNODE_LEASE_SECONDS",
            "how long a node holds a job without a heartbeat before it is requeued",
            minimum=1,
        ),
    )
    heartbeat_seconds: int = field(
        default=10,
        metadata=setting(
            "heartbeat_seconds",
            "CYNODE_HEARTBEAT_SECONDS",
            "how often nodes send heartbeats on their dispatch stream; shorter than a lease",
            minimum=1,
        ),
    )
    max_attempts: int = field(
        default=3,
        metadata=setting(
            "scheduler.max_attempts",
            "CYNODE_SCHEDULER_MAX_ATTEMPTS",
            "attempts a job gets when its lease runs out; after the last it fails",
            minimum=1,
        ),
    )
    # A node whose last heartbeat is older than this many heartbeats counts as offline.
    stale_heartbeats: int = field(
        default=3,
        metadata=setting(
            "scheduler.stale_heartbeats",
            "CYNODE_SCHEDULER_STALE_HEARTBEATS",
            "missed heartbeats after which the fleet view shows a node as offline",
            minimum=1,
        ),
    )
    claim_batch: int = field(
        default=512,
        metadata=setting(
            "scheduler.claim_batch",
            "CYNODE_SCHEDULER_CLAIM_BATCH",
            "most queued jobs one scheduler pass claims",
            minimum=1,
        ),
    )
    # Quotas (SPEC §3.9); each user's own value, where set, wins.
    max_queued_tasks: int = field(
        default=10000,
        metadata=setting(
            "quotas.max_queued_tasks",
            "CYNODE_QUOTA_MAX_QUEUED_TASKS",
            "queued tasks one user may have; a create past it answers 429 (0: no limit)",
            minimum=0,
        ),
    )
    max_running_jobs: int = field(
        default=0,
        metadata=setting(
            "quotas.max_running_jobs",
            "CYNODE_QUOTA_MAX_RUNNING_JOBS",
            "jobs of one user running at once; more wait queued (0: no limit)",
            minimum=0,
        ),
    )
    notify_channel: str = field(
        default="cynode_jobs",
        metadata=setting(
            "scheduler.notify_channel",
            "CYNODE_SCHEDULER_NOTIFY_CHANNEL",
            "Postgres LISTEN/NOTIFY channel that wakes the schedulers of all replicas",
        ),
    )
    node_jwt_ttl_seconds: int = field(
        default=24 * 3600,
        metadata=setting(
            "node_token_ttl_seconds",
            "CYNODE_NODE_TOKEN_TTL",
            "lifetime of the token a node gets at registration (1 day)",
            minimum=1,
        ),
    )
    sandbox_image: str = field(
        default="localhost/cynode-sandbox",
        metadata=setting(
            "sandbox.image",
            "CYNODE_SANDBOX_IMAGE",
            "image of every sandbox container (the node's own `sandbox.image` yields to it)",
        ),
    )
    default_timeout_seconds: int = field(
        default=3600,
        metadata=setting(
            "sandbox.default_timeout_seconds",
            "CYNODE_SANDBOX_DEFAULT_TIMEOUT_SECONDS",
            "wall-clock limit of a job that names none",
            minimum=1,
        ),
    )
    max_timeout_seconds: int = field(
        default=10800,
        metadata=setting(
            "sandbox.max_timeout_seconds",
            "CYNODE_SANDBOX_MAX_TIMEOUT_SECONDS",
            "longest wall-clock limit a job may ask for "
            "(also sent as `constraints.max_job_timeout_seconds`)",
            minimum=1,
        ),
    )
    memory_mb: int = field(
        default=1024,
        metadata=setting(
            "sandbox.memory_mb",
            "CYNODE_SANDBOX_MEMORY_MB",
            "memory limit of each sandbox container, MiB (Podman needs at least 6)",
            minimum=6,
        ),
    )
    cpus: float = field(
        default=1.0,
        metadata=setting(
            "sandbox.cpus",
            "CYNODE_SANDBOX_CPUS",
            "CPUs each sandbox container may use (fractions allowed)",
            minimum=0.01,
        ),
    )
    pids: int = field(
        default=256,
        metadata=setting(
            "sandbox.pids",
            "CYNODE_SANDBOX_PIDS",
            "most processes and threads in one sandbox container",
            minimum=1,
        ),
    )
    max_output_bytes: int = field(
        default=262144,
        metadata=setting(
            "sandbox.max_output_bytes",
            "CYNODE_SANDBOX_MAX_OUTPUT_BYTES",
            "stdout and stderr kept per job, each; beyond it the result says `truncated`",
            minimum=1,
        ),
    )
    max_request_bytes: int = field(
        default=10 * 1024 * 1024,
        metadata=setting(
            "constraints.max_request_bytes",
            "CYNODE_CONSTRAINTS_MAX_REQUEST_BYTES",
            "largest request body a node's worker API and inference proxy accept (10 MiB)",
            minimum=1,
        ),
    )
    inference_enabled: bool = field(
        default=True,
        metadata=setting(
            "inference.enabled",
            "CYNODE_INFERENCE_ENABLED",
            "let nodes that can run inference jobs do so; false issues every node "
            "a config without inference",
        ),
    )
    inference_upstream: str = field(
        default="http://127.0.0.1:11434",
        metadata=setting(
            "inference.upstream",
            "CYNODE_INFERENCE_UPSTREAM",
            "inference upstream named in the node config (informational: each node "
            "relays to its own `inference.url`)",
        ),
    )
    allowed_models: tuple[str, ...] = field(
        default=(),
        metadata=setting(
            "inference.allowed_models",
            "CYNODE_INFERENCE_ALLOWED_MODELS",
            "models nodes may serve (YAML list, or comma-separated in the env); "
            "empty: whatever each node reports",
            shown_default="(each node's models)",
        ),
    )
    inference_user_concurrency: int = field(
        default=32,
        metadata=setting(
            "inference.user_concurrency",
            "CYNODE_INFERENCE_USER_CONCURRENCY",
            "chat and embeddings requests one user may have in flight (running or queued) "
            "through the gateway's OpenAI door, unless the user's own "
            "`max_inference_requests` quota says otherwise; more are answered 429",
            minimum=1,
        ),
    )
    inference_queue_seconds: float = field(
        default=300.0,
        metadata=setting(
            "inference.queue_seconds",
            "CYNODE_INFERENCE_QUEUE_SECONDS",
            "how long a chat request waits in the fair queue for a free node before "
            "it is answered 503",
            minimum=0.1,
        ),
    )
    default_model: str = field(
        default="",
        metadata=setting(
            "default_model",
            "CYNODE_DEFAULT_MODEL",
            "model prompt tasks use when they name none; empty lets each node pick its first",
            shown_default="(node's first model)",
        ),
    )

    def check(self) -> None:
        if self.default_timeout_seconds > self.max_timeout_seconds:
            raise SettingsError(
                "sandbox.default_timeout_seconds must not exceed sandbox.max_timeout_seconds "
                f"({self.default_timeout_seconds} > {self.max_timeout_seconds})"
            )
        if self.heartbeat_seconds >= self.lease_seconds:
            raise SettingsError(
                "heartbeat_seconds must be shorter than lease_seconds "
                f"({self.heartbeat_seconds} >= {self.lease_seconds}): leases would run out "
                "between heartbeats"
            )


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(
        default_factory=default_data_dir,
        metadata=setting(
            "data_dir",
            "CYNODE_DATA_DIR",
            "state directory (SQLite file, generated JWT secret)",
            shown_default="./var/orchestrator",
        ),
    )
    database_url: str = field(
        default="",
        metadata=setting(
            "database_url",
            "CYNODE_DATABASE_URL",
            "postgresql://... or sqlite:///...; `?search_path=` picks a Postgres schema",
            shown_default="sqlite:///<data_dir>/cynode.db",
        ),
    )
    host: str = field(
        default="127.0.0.1",
        metadata=setting("host", "CYNODE_LISTEN_HOST", "address every listener binds"),
    )
    advertise_host: str = field(
        default="",
        metadata=setting(
            "advertise_host",
            "CYNODE_ADVERTISE_HOST",
            "name or address other replicas reach this one's gateway gRPC port at, to "
            "forward OpenAI door calls to the links it holds (SPEC §10.3); with TLS, a "
            "name in its certificate",
            shown_default="(host; this machine's name when host is 0.0.0.0 or ::)",
        ),
    )
    gateway_rest_port: int = field(
        default=12080,
        metadata=setting(
            "gateway_rest_port",
            "CYNODE_GATEWAY_REST_PORT",
            "user gateway REST",
            minimum=0,
            maximum=65535,
        ),
    )
    gateway_grpc_port: int = field(
        default=12081,
        metadata=setting(
            "gateway_grpc_port",
            "CYNODE_GATEWAY_GRPC_PORT",
            "user gateway gRPC",
            minimum=0,
            maximum=65535,
        ),
    )
    control_rest_port: int = field(
        default=12082,
        metadata=setting(
            "control_rest_port",
            "CYNODE_CONTROL_REST_PORT",
            "control plane REST",
            minimum=0,
            maximum=65535,
        ),
    )
    control_grpc_port: int = field(
        default=12083,
        metadata=setting(
            "control_grpc_port",
            "CYNODE_CONTROL_GRPC_PORT",
            "control plane gRPC",
            minimum=0,
            maximum=65535,
        ),
    )
    admin_password: str | None = field(
        default=None,
        repr=False,
        metadata=setting(
            "admin_password",
            "ADMIN_PASSWORD",
            "password of the bootstrap user `admin`, created on first start; required unless --dev",
        ),
    )
    node_psk: str | None = field(
        default=None,
        repr=False,
        metadata=setting("node_psk", "NODE_PSK", "pre-shared key nodes register with"),
    )
    jwt_secret: str | None = field(
        default=None,
        repr=False,
        metadata=setting(
            "jwt_secret",
            "CYNODE_JWT_SECRET",
            "HS256 signing secret; when unset, generated once into <data_dir>/jwt_secret (0600)",
            shown_default="(generated)",
        ),
    )
    access_token_ttl_seconds: int = field(
        default=15 * 60,
        metadata=setting(
            "access_token_ttl_seconds",
            "CYNODE_ACCESS_TOKEN_TTL",
            "access token lifetime (15 min)",
            minimum=1,
        ),
    )
    refresh_token_ttl_seconds: int = field(
        default=7 * 24 * 3600,
        metadata=setting(
            "refresh_token_ttl_seconds",
            "CYNODE_REFRESH_TOKEN_TTL",
            "refresh token lifetime (7 days)",
            minimum=1,
        ),
    )
    login_max_failures: int = field(
        default=5,
        metadata=setting(
            "login_max_failures",
            "CYNODE_LOGIN_MAX_FAILURES",
            "failed logins per client or per handle before 429",
            minimum=1,
        ),
    )
    login_window_seconds: int = field(
        default=300,
        metadata=setting(
            "login_window_seconds",
            "CYNODE_LOGIN_WINDOW",
            "window over which failed logins are counted",
            minimum=1,
        ),
    )
    require_inference: bool = field(
        default=True,
        metadata=setting(
            "require_inference",
            "CYNODE_REQUIRE_INFERENCE",
            "readyz needs an inference-capable node; false for sandbox-only deployments",
        ),
    )
    artifacts_dir: Path | None = field(
        default=None,
        metadata=setting(
            "artifacts_dir",
            "CYNODE_ARTIFACTS_DIR",
            "where artifact blobs are kept; replicas must share it (one volume, same path)",
            shown_default="<data_dir>/artifacts",
        ),
    )
    artifacts_ttl_seconds: int = field(
        default=30 * 24 * 3600,
        metadata=setting(
            "artifacts_ttl_seconds",
            "CYNODE_ARTIFACTS_TTL_SECONDS",
            "artifacts are removed this long after their job ended (a background sweep); "
            "0 keeps them until their task is deleted",
            minimum=0,
        ),
    )
    tls_cert: Path | None = field(
        default=None,
        metadata=setting("tls_cert", "CYNODE_TLS_CERT", "server certificate (PEM)"),
    )
    tls_key: Path | None = field(
        default=None, metadata=setting("tls_key", "CYNODE_TLS_KEY", "server key (PEM)")
    )
    node_client_ca: Path | None = field(
        default=None,
        metadata=setting(
            "node_client_ca",
            "CYNODE_NODE_CLIENT_CA",
            "mTLS for nodes: the control plane accepts only client certificates this CA issued",
        ),
    )
    insecure: bool = field(
        default=False,
        metadata=setting(
            "insecure",
            "CYNODE_INSECURE",
            "allow plain text on a non-loopback address (--insecure)",
        ),
    )
    dev: bool = field(
        default=False,
        metadata=setting("dev", "CYNODE_DEV", "development mode (--dev): generated admin password"),
    )
    log_level: str = field(
        default="info",
        metadata=setting(
            "log_level",
            "CYNODE_LOG_LEVEL",
            "debug, info, warning, error",
            choices=("debug", "info", "warning", "error"),
        ),
    )
    # The control plane's knobs: YAML sections sandbox/inference/constraints/scheduler.
    control_plane: ControlPlaneOptions = field(default_factory=ControlPlaneOptions)

    @property
    def effective_database_url(self) -> str:
        return self.database_url or default_sqlite_url(self.data_dir)

    @property
    def effective_artifacts_dir(self) -> Path:
        return self.artifacts_dir or self.data_dir / "artifacts"

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert is not None and self.tls_key is not None

    @property
    def plain_text_exposed(self) -> bool:
        """Plain text on an address other hosts can reach (allowed only with --insecure)."""
        return self.host not in LOOPBACK_HOSTS and not self.tls_enabled

    def check(self) -> None:
        """Refuses values and combinations the orchestrator must not start with."""
        for target, item in settables(self):
            item.setting.check(getattr(target, item.field.name))
        self.control_plane.check()
        if (self.tls_cert is None) != (self.tls_key is None):
            raise SettingsError("CYNODE_TLS_CERT and CYNODE_TLS_KEY go together")
        if self.plain_text_exposed and not self.insecure:
            raise SettingsError(
                f"listening on {self.host} needs CYNODE_TLS_CERT and CYNODE_TLS_KEY "
                "(or --insecure for plain text)"
            )
        if self.node_client_ca is not None and not self.tls_enabled:
            raise SettingsError("CYNODE_NODE_CLIENT_CA (mTLS for nodes) needs TLS certificates")

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


def options_of(options: ControlPlaneOptions) -> dict[str, Any]:
    """The options as keyword arguments, for `ControlPlaneSettings(**options_of(o), ...)`
    (not `asdict`, which would deep-copy them)."""
    return {f.name: getattr(options, f.name) for f in fields(ControlPlaneOptions)}


def settables(settings: Settings) -> list[tuple[Any, Settable]]:
    """Every settable field with the object that holds it (Settings or its options)."""
    return [(settings, s) for s in settable(Settings)] + [
        (settings.control_plane, s) for s in settable(ControlPlaneOptions)
    ]


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
    return flatten(loaded)


def load_settings(
    config_file: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Settings from defaults, then the YAML file, then env, then explicit overrides
    (command-line flags, by field name). Overrides whose value is None are ignored."""
    env = os.environ if env is None else env
    if config_file is None and env.get(CONFIG_ENV):
        config_file = Path(env[CONFIG_ENV])
    items = [item for _, item in settables(Settings())]
    values: dict[str, Any] = {}
    if config_file is not None:
        by_key = {item.setting.key: item for item in items}
        loaded = _read_yaml(config_file)
        unknown = sorted(set(loaded) - set(by_key))
        if unknown:
            raise SettingsError(f"unknown settings in {config_file}: {', '.join(unknown)}")
        for key, raw in loaded.items():
            item = by_key[key]
            values[item.field.name] = convert(item.hint, raw, f"{key} in {config_file}")
    for item in items:
        if item.setting.env in env:
            values[item.field.name] = convert(item.hint, env[item.setting.env], item.setting.env)
    by_name = {item.field.name: item for item in items}
    for name, raw in overrides.items():
        if raw is not None:
            values[name] = convert(by_name[name].hint, raw, f"--{name.replace('_', '-')}")
    if values.get("data_dir") is None:
        values.pop("data_dir", None)
    # Field names are unique across Settings and its options, so one dict splits in two.
    option_names = {item.field.name for item in settable(ControlPlaneOptions)}
    options = ControlPlaneOptions(**{k: v for k, v in values.items() if k in option_names})
    settings = Settings(
        **{k: v for k, v in values.items() if k not in option_names}, control_plane=options
    )
    settings.check()
    return settings


def shown_default(item: Settable, holder: object) -> str:
    """The default as `serve --help` prints it (tools/settings_doc.py renders the same way)."""
    if item.setting.shown_default:
        return item.setting.shown_default
    value = getattr(holder, item.field.name)
    if value is None or value in ("", ()):
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


def settings_help() -> str:
    defaults = Settings()
    items = settables(defaults)
    width = max(len(item.setting.env) for _, item in items)
    lines = ["settings (YAML key / environment variable, default):"]
    for holder, item in items:
        s = item.setting
        lines.append(f"  {s.env:<{width}}  {s.key} [{shown_default(item, holder)}]\n      {s.help}")
    lines.append(
        "Nested keys are YAML sections: `sandbox: {memory_mb: 512}` sets sandbox.memory_mb."
    )
    lines.append(
        f"Precedence: defaults < --config YAML (or ${CONFIG_ENV}) < environment "
        "< command-line flags. Reference: docs/settings.md."
    )
    return "\n".join(lines)
