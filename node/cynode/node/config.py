"""The node's own configuration: a YAML file, then environment overrides.

This is what the operator sets on the machine (where the orchestrator is, the PSK, the
state dir, Podman). What the orchestrator delivers later (limits, timeouts, image) is
mapped separately in `applied_config.py`. Each field's YAML key and env variable are declared
once, as field metadata (`setting`); the loader and docs/settings.md read them.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping
from dataclasses import Field, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_type_hints
from urllib.parse import urlsplit

import yaml

from .runtime.userns import USERNS_MODES

DEFAULT_REST_URL = "http://127.0.0.1:12082"
DEFAULT_GRPC_PORT = 12083
DEFAULT_WORKER_API_PORT = 12090
DEFAULT_STATE_DIR = "/var/lib/cynode-node"
INFERENCE_MODES = ("none", "existing", "container")
# A cold job's connections to its proxy, at most: each holds two files of its child's,
# and all share the job's 64 MB in the proxy host.
MAX_JOB_CONNECTIONS = 1024
DEFAULT_OLLAMA_IMAGE = "docker.io/ollama/ollama:latest"
DEFAULT_OLLAMA_MODELS_VOLUME = "cynode-ollama-models"
# Where this repository keeps the Podman settings this kind of host needs.
REPO_CONTAINERS_CONF = Path(__file__).resolve().parents[3] / "deploy" / "podman" / "containers.conf"


class ConfigError(ValueError):
    """The node configuration is unusable; the message says which key and why."""


SETTING = "setting"


@dataclass(frozen=True)
class Setting:
    """How an operator reaches one NodeConfig field; declared once, as field metadata,
    so the loader and docs/settings.md (tools/settings_doc.py) read the same names."""

    key: str  # dotted YAML path: `sandbox.image` is `sandbox: {image: ...}`
    env: str
    help: str
    # The default as the docs say it, when the field's own value is not what applies.
    shown_default: str = ""


def setting(key: str, env: str, help: str, shown_default: str = "") -> dict[str, Setting]:
    return {SETTING: Setting(key, env, help, shown_default)}


@dataclass(frozen=True)
class NodeConfig:
    node_slug: str = field(
        metadata=setting(
            "node.slug", "CYNODE_NODE_SLUG", "the node's unique name", "(the host name)"
        )
    )
    psk: str = field(
        default="",
        repr=False,
        metadata=setting("psk", "NODE_PSK", "pre-shared key the node registers with"),
    )
    node_name: str = field(
        default="", metadata=setting("node.name", "CYNODE_NODE_NAME", "display name")
    )
    labels: tuple[str, ...] = field(
        default=(),
        metadata=setting(
            "node.labels", "CYNODE_NODE_LABELS", "labels (YAML list, or comma-separated)"
        ),
    )
    orchestrator_url: str = field(
        default=DEFAULT_REST_URL,
        metadata=setting(
            "orchestrator.url", "CYNODE_ORCHESTRATOR_URL", "the control plane's REST URL"
        ),
    )
    control_plane_grpc: str = field(
        default="",
        metadata=setting(
            "orchestrator.grpc",
            "CYNODE_CONTROL_PLANE_GRPC",
            "host:port of the control plane's gRPC listener",
            f"(orchestrator.url's host):{DEFAULT_GRPC_PORT}",
        ),
    )
    ca_file: str = field(
        default="",
        metadata=setting(
            "orchestrator.ca_file",
            "CYNODE_CA_FILE",
            "CA (PEM) the orchestrator's certificate is checked against",
        ),
    )
    # Pins: the SHA-256 fingerprint `certs init` printed; ca_file must match it.
    ca_fingerprint: str = field(
        default="",
        metadata=setting(
            "orchestrator.ca_fingerprint",
            "CYNODE_CA_FINGERPRINT",
            "SHA-256 fingerprint `certs init` printed; ca_file must match it",
        ),
    )
    # mTLS: the node's certificate (issued by the orchestrator's CA) and its key.
    client_cert: str = field(
        default="",
        metadata=setting(
            "orchestrator.client_cert",
            "CYNODE_CLIENT_CERT",
            "mTLS: the node's certificate, issued by the orchestrator's CA",
        ),
    )
    client_key: str = field(
        default="",
        metadata=setting("orchestrator.client_key", "CYNODE_CLIENT_KEY", "mTLS: its key"),
    )
    insecure: bool = field(
        default=False,
        metadata=setting(
            "insecure",
            "CYNODE_INSECURE",
            "allow plain text to a non-loopback orchestrator / worker API address (a lab only)",
        ),
    )
    state_dir: Path = field(
        default=Path(DEFAULT_STATE_DIR),
        metadata=setting(
            "state_dir", "CYNODE_NODE_STATE_DIR", "private state: session, result spool, relay"
        ),
    )
    worker_api_host: str = field(
        default="127.0.0.1",
        metadata=setting("worker_api.host", "CYNODE_WORKER_API_HOST", "worker API address"),
    )
    worker_api_port: int = field(
        default=DEFAULT_WORKER_API_PORT,
        metadata=setting(
            "worker_api.port", "CYNODE_WORKER_API_PORT", "worker API port (0: a free one)"
        ),
    )
    worker_api_base_url: str = field(
        default="",
        metadata=setting(
            "worker_api.base_url",
            "CYNODE_WORKER_API_BASE_URL",
            "URL the node advertises for its worker API",
            "http(s)://<host>:<port>",
        ),
    )
    worker_api_tls_cert: str = field(
        default="",
        metadata=setting(
            "worker_api.tls_cert", "CYNODE_WORKER_API_TLS_CERT", "worker API certificate (PEM)"
        ),
    )
    worker_api_tls_key: str = field(
        default="",
        metadata=setting("worker_api.tls_key", "CYNODE_WORKER_API_TLS_KEY", "worker API key"),
    )
    podman_socket: str = field(
        default="",
        metadata=setting(
            "podman.socket",
            "CYNODE_PODMAN_SOCKET",
            "Podman API socket to use; empty: the node starts its own `podman system service`",
        ),
    )
    containers_conf: str = field(
        default="",
        metadata=setting(
            "podman.containers_conf",
            "CYNODE_PODMAN_CONTAINERS_CONF",
            "containers.conf the node's Podman service runs with",
            "$CONTAINERS_CONF, else deploy/podman/containers.conf",
        ),
    )
    sandbox_image: str = field(
        default="localhost/cynode-sandbox",
        metadata=setting(
            "sandbox.image",
            "CYNODE_SANDBOX_IMAGE",
            "sandbox image until the orchestrator's config (its `sandbox.image`) arrives",
        ),
    )
    workspace_mb: int = field(
        default=1024,
        metadata=setting(
            "sandbox.workspace_mb",
            "CYNODE_SANDBOX_WORKSPACE_MB",
            "size of each job's /workspace, MiB (an ext4 image; past it the job gets "
            "ENOSPC); 0: unbounded, a plain volume",
        ),
    )
    sandbox_userns: str = field(
        default="auto",
        metadata=setting(
            "sandbox.userns",
            "CYNODE_SANDBOX_USERNS",
            "auto: every sandbox and inference pod in a user namespace of its own (host "
            "ids from the `containers` range in /etc/subuid and /etc/subgid; the node "
            "refuses to start without one); host: no user namespace",
        ),
    )
    max_concurrency: int = field(
        default=2,
        metadata=setting(
            "sandbox.max_concurrency", "CYNODE_MAX_CONCURRENCY", "jobs the node runs at once"
        ),
    )
    # Plain jobs' sandboxes made ahead, each used by one job (SPEC §4.10); 0: none.
    sandbox_warm_containers: int = field(
        default=2,
        metadata=setting(
            "sandbox.warm_containers",
            "CYNODE_SANDBOX_WARM_CONTAINERS",
            "sandbox containers kept started ahead, each used by one job only, bounded "
            "by sandbox.max_concurrency and free memory; 0: none",
        ),
    )
    sandbox_warm_idle_s: float = field(
        default=600.0,
        metadata=setting(
            "sandbox.warm_idle_seconds",
            "CYNODE_SANDBOX_WARM_IDLE_SECONDS",
            "with no job for this long the warm sandboxes are let go until the next job "
            "(which starts cold); 0: kept always",
        ),
    )
    inference_mode: str = field(
        default="none",
        metadata=setting(
            "inference.mode",
            "CYNODE_INFERENCE_MODE",
            "none, existing (relay to inference.url) or container (start an Ollama container)",
        ),
    )
    # existing: the Ollama the node relays to. container: where the node publishes the
    # Ollama container it starts (127.0.0.1 and this URL's port).
    inference_url: str = field(
        default="http://127.0.0.1:11434",
        metadata=setting(
            "inference.url",
            "CYNODE_INFERENCE_URL",
            "existing: the Ollama to relay to; container: where its container is published",
        ),
    )
    # Model for prompt jobs that name none; empty: the orchestrator's default, else the
    # first model the node's Ollama lists.
    inference_default_model: str = field(
        default="",
        metadata=setting(
            "inference.default_model",
            "CYNODE_INFERENCE_DEFAULT_MODEL",
            "model for prompt jobs that name none",
            "(the orchestrator's default, else the first listed)",
        ),
    )
    inference_proxy_image: str = field(
        default="localhost/cynode-proxy",
        metadata=setting(
            "inference.proxy_image",
            "CYNODE_INFERENCE_PROXY_IMAGE",
            "proxy image: warm pods' sidecars and the node's proxy host",
        ),
    )
    inference_proxy_timeout_s: float = field(
        default=120.0,
        metadata=setting(
            "inference.proxy_timeout_seconds",
            "CYNODE_INFERENCE_PROXY_TIMEOUT",
            "the proxy's wait for a response head (504 beyond it; the sidecar's, and a cold "
            "job's proxy in the proxy host)",
        ),
    )
    # Inference pods made ahead, while idle, so a job only starts its sandbox; 0: none.
    inference_warm_pods: int = field(
        default=1,
        metadata=setting(
            "inference.warm_pods",
            "CYNODE_INFERENCE_WARM_PODS",
            "inference pods kept ready while idle, each used by one job; 0: none (every "
            "inference job runs cold: its sandbox alone, its proxy in the node's proxy host)",
        ),
    )
    # A cold job's open connections to its proxy: its child's open-files limit.
    inference_job_max_connections: int = field(
        default=64,
        metadata=setting(
            "inference.job_max_connections",
            "CYNODE_INFERENCE_JOB_MAX_CONNECTIONS",
            "connections a cold inference job may hold open to its proxy at once (its "
            "child in the proxy host gets an open-files limit for them; more wait in the "
            "listen backlog until one closes)",
        ),
    )
    # Chat and embeddings calls the inference link serves at once (SPEC §7.12); reported
    # in the capability report, and the orchestrator's placement never exceeds it.
    inference_max_concurrency: int = field(
        default=1,
        metadata=setting(
            "inference.max_concurrency",
            "CYNODE_INFERENCE_MAX_CONCURRENCY",
            "chat and embeddings calls from the gateway the node serves at once: the "
            "generations its Ollama runs at once (OLLAMA_NUM_PARALLEL); a call placed "
            "beyond them waits in Ollama's queue, outside the gateway's fair queue",
        ),
    )
    # Upstream offers a sandbox the socket alone; both is ours (SPEC §9).
    inference_sandbox_tcp: bool = field(
        default=True,
        metadata=setting(
            "inference.sandbox_tcp",
            "CYNODE_INFERENCE_SANDBOX_TCP",
            "offer sandboxes OLLAMA_BASE_URL (TCP on the pod's loopback) beside "
            "INFERENCE_PROXY_URL (the socket); false: the socket alone",
        ),
    )
    # Upstream's node config section, read beside ours: each, when set, decides the
    # inference.* setting it names (see `_apply_inference_backend`).
    backend_enabled: str = field(
        default="",
        metadata=setting(
            "inference_backend.enabled",
            "CYNODE_INFERENCE_BACKEND_ENABLED",
            "upstream's form: false is inference.mode none; true keeps inference.mode, "
            "or existing when that is none",
            "(unset)",
        ),
    )
    backend_kind: str = field(
        default="",
        metadata=setting(
            "inference_backend.kind",
            "CYNODE_INFERENCE_BACKEND_KIND",
            "upstream's form: the backend; only ollama is served",
            "(unset)",
        ),
    )
    backend_model: str = field(
        default="",
        metadata=setting(
            "inference_backend.model",
            "CYNODE_INFERENCE_BACKEND_MODEL",
            "upstream's form of inference.default_model (which wins when both are set)",
            "(unset)",
        ),
    )
    inference_image: str = field(
        default=DEFAULT_OLLAMA_IMAGE,
        metadata=setting(
            "inference.image", "CYNODE_INFERENCE_IMAGE", "container mode: the Ollama image"
        ),
    )
    inference_models_volume: str = field(
        default=DEFAULT_OLLAMA_MODELS_VOLUME,
        metadata=setting(
            "inference.models_volume",
            "CYNODE_INFERENCE_MODELS_VOLUME",
            "container mode: the volume that keeps pulled models",
        ),
    )
    artifacts_max_file_mb: int = field(
        default=256,
        metadata=setting(
            "artifacts.max_file_mb",
            "CYNODE_ARTIFACTS_MAX_FILE_MB",
            "largest file collected from a job's /workspace/out/, MiB; a larger one is "
            "left out and the set marked truncated",
        ),
    )
    artifacts_max_job_mb: int = field(
        default=1024,
        metadata=setting(
            "artifacts.max_job_mb",
            "CYNODE_ARTIFACTS_MAX_JOB_MB",
            "most bytes collected from one job's /workspace/out/, MiB",
        ),
    )
    reconnect_initial_s: float = field(
        default=0.5,
        metadata=setting(
            "reconnect.initial_seconds",
            "CYNODE_RECONNECT_INITIAL_SECONDS",
            "first wait before reconnecting to the orchestrator (doubles each time)",
        ),
    )
    reconnect_max_s: float = field(
        default=30.0,
        metadata=setting(
            "reconnect.max_seconds", "CYNODE_RECONNECT_MAX_SECONDS", "longest reconnect wait"
        ),
    )

    @property
    def grpc_target(self) -> str:
        """host:port of the control plane's gRPC listener."""
        if self.control_plane_grpc:
            return self.control_plane_grpc
        host = urlsplit(self.orchestrator_url).hostname or "127.0.0.1"
        return f"{host}:{DEFAULT_GRPC_PORT}"

    @property
    def uses_tls(self) -> bool:
        return urlsplit(self.orchestrator_url).scheme == "https" or bool(self.ca_file)

    @property
    def advertised_worker_api(self) -> str:
        if self.worker_api_base_url:
            return self.worker_api_base_url
        scheme = "https" if self.worker_api_tls_cert else "http"
        return f"{scheme}://{self.worker_api_host}:{self.worker_api_port}"

    @property
    def effective_containers_conf(self) -> str:
        """The containers.conf the private Podman service runs with ('' = Podman's own)."""
        if self.containers_conf:
            return self.containers_conf
        if os.environ.get("CONTAINERS_CONF"):
            return os.environ["CONTAINERS_CONF"]
        return str(REPO_CONTAINERS_CONF) if REPO_CONTAINERS_CONF.is_file() else ""


def settable() -> list[tuple[Field[Any], Setting]]:
    return [
        (f, f.metadata[SETTING])
        for f in fields(NodeConfig)
        if isinstance(f.metadata.get(SETTING), Setting)
    ]


# YAML path (dotted) -> NodeConfig field, and env variable -> field; from the metadata.
_YAML_KEYS: dict[str, str] = {s.key: f.name for f, s in settable()}
ENV_KEYS: dict[str, str] = {s.env: f.name for f, s in settable()}
_HINTS = get_type_hints(NodeConfig)
_INT_FIELDS = {name for name, hint in _HINTS.items() if hint is int}
_FLOAT_FIELDS = {name for name, hint in _HINTS.items() if hint is float}


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def _coerce(name: str, value: Any, source: str) -> Any:
    try:
        if name in _INT_FIELDS:
            return int(value)
        if name in _FLOAT_FIELDS:
            return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: expected a number, got {value!r}") from None
    if _HINTS[name] is bool:
        text = str(value).strip().lower()
        if text not in ("1", "true", "yes", "on", "0", "false", "no", "off", ""):
            raise ConfigError(f"{source}: expected true or false, got {value!r}")
        return text in ("1", "true", "yes", "on")
    if _HINTS[name] is Path:
        return Path(str(value)).expanduser()
    if _HINTS[name] == tuple[str, ...]:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        if not isinstance(value, list):
            raise ConfigError(f"{source}: expected a list of strings")
        return tuple(str(item) for item in value)
    return "" if value is None else str(value)


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> NodeConfig:
    """Reads the YAML file (optional), then lets the environment override it."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    if path is not None:
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        for key, value in _flatten(raw).items():
            if key not in _YAML_KEYS:
                raise ConfigError(f"{path}: unknown key {key!r}")
            name = _YAML_KEYS[key]
            values[name] = _coerce(name, value, f"{path}: {key}")
    for env_name, name in ENV_KEYS.items():
        if env.get(env_name):
            values[name] = _coerce(name, env[env_name], env_name)
    values.setdefault("node_slug", socket.gethostname())
    config = _apply_inference_backend(NodeConfig(**values))
    return validate(config)


INFERENCE_BACKEND_KINDS = ("ollama",)


def _apply_inference_backend(config: NodeConfig) -> NodeConfig:
    """Upstream's `inference_backend` section folded into our inference.* settings, so a
    node config written for upstream runs here unchanged."""
    changes: dict[str, Any] = {}
    enabled = config.backend_enabled.strip().lower()
    if enabled:
        if enabled not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            raise ConfigError(f"inference_backend.enabled: expected true or false, got {enabled!r}")
        if enabled in ("0", "false", "no", "off"):
            changes["inference_mode"] = "none"
        elif config.inference_mode == "none":
            changes["inference_mode"] = "existing"
    kind = config.backend_kind.strip().lower()
    if kind and kind not in INFERENCE_BACKEND_KINDS:
        raise ConfigError(
            f"inference_backend.kind must be one of {', '.join(INFERENCE_BACKEND_KINDS)}"
        )
    if config.backend_model and not config.inference_default_model:
        changes["inference_default_model"] = config.backend_model
    return replace(config, **changes) if changes else config


def validate(config: NodeConfig) -> NodeConfig:
    if not config.node_slug:
        raise ConfigError("node.slug is empty")
    if config.max_concurrency < 1:
        raise ConfigError("sandbox.max_concurrency must be at least 1")
    if not 0 <= config.worker_api_port < 65536:
        # 0 asks the kernel for a free port (tests, several nodes on one host).
        raise ConfigError("worker_api.port must be 0-65535")
    if config.inference_mode not in INFERENCE_MODES:
        raise ConfigError(f"inference.mode must be one of {', '.join(INFERENCE_MODES)}")
    if config.inference_mode != "none":
        url = urlsplit(config.inference_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError("inference.url must be an http:// or https:// URL")
    if config.inference_proxy_timeout_s <= 0:
        raise ConfigError("inference.proxy_timeout_seconds must be > 0")
    if config.inference_warm_pods < 0:
        raise ConfigError("inference.warm_pods must be 0 (none) or more")
    if not 1 <= config.inference_job_max_connections <= MAX_JOB_CONNECTIONS:
        raise ConfigError(f"inference.job_max_connections must be 1-{MAX_JOB_CONNECTIONS}")
    if config.sandbox_warm_containers < 0:
        raise ConfigError("sandbox.warm_containers must be 0 (none) or more")
    if config.sandbox_warm_idle_s < 0:
        raise ConfigError("sandbox.warm_idle_seconds must be 0 (kept always) or more")
    if config.workspace_mb < 0:
        raise ConfigError("sandbox.workspace_mb must be 0 (unbounded) or more")
    if 0 < config.workspace_mb < 2:
        raise ConfigError("sandbox.workspace_mb must be at least 2 (ext4's smallest)")
    if config.sandbox_userns not in USERNS_MODES:
        raise ConfigError(f"sandbox.userns must be one of {', '.join(USERNS_MODES)}")
    if config.artifacts_max_file_mb < 0 or config.artifacts_max_job_mb < 0:
        raise ConfigError("artifacts.max_file_mb and artifacts.max_job_mb must be 0 or more")
    if urlsplit(config.orchestrator_url).scheme not in ("http", "https"):
        raise ConfigError("orchestrator.url must be an http:// or https:// URL")
    _validate_tls(config)
    if config.reconnect_initial_s <= 0 or config.reconnect_max_s < config.reconnect_initial_s:
        raise ConfigError("reconnect: need 0 < initial_seconds <= max_seconds")
    return config


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _validate_tls(config: NodeConfig) -> None:
    if bool(config.client_cert) != bool(config.client_key):
        raise ConfigError("orchestrator.client_cert and orchestrator.client_key go together")
    if bool(config.worker_api_tls_cert) != bool(config.worker_api_tls_key):
        raise ConfigError("worker_api.tls_cert and worker_api.tls_key go together")
    if config.client_cert and not config.uses_tls:
        raise ConfigError("orchestrator.client_cert needs TLS (an https:// orchestrator.url)")
    if config.ca_fingerprint and not config.ca_file:
        raise ConfigError("orchestrator.ca_fingerprint pins orchestrator.ca_file: set both")
    # The PSK and the node JWT must never cross a network in clear.
    host = config.grpc_target.rsplit(":", 1)[0]
    rest_host = urlsplit(config.orchestrator_url).hostname or ""
    exposed = not (is_loopback(host) and is_loopback(rest_host))
    if exposed and not config.uses_tls and not config.insecure:
        raise ConfigError(
            f"refusing plain text to the orchestrator at {config.grpc_target}: the PSK and "
            "node token would cross the network in clear; use an https:// orchestrator.url "
            "with orchestrator.ca_file (or insecure: true for an isolated lab)"
        )


def with_overrides(config: NodeConfig, **changes: Any) -> NodeConfig:
    return validate(replace(config, **changes))
