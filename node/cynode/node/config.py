"""The node's own configuration: a YAML file, then environment overrides.

This is what the operator sets on the machine (where the orchestrator is, the PSK, the
state dir, Podman). What the orchestrator delivers later (limits, timeouts, image) is
mapped separately in `applied_config.py`.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

DEFAULT_REST_URL = "http://127.0.0.1:12082"
DEFAULT_GRPC_PORT = 12083
DEFAULT_WORKER_API_PORT = 12090
DEFAULT_STATE_DIR = "/var/lib/cynode-node"
INFERENCE_MODES = ("none", "existing", "container")
DEFAULT_OLLAMA_IMAGE = "docker.io/ollama/ollama:latest"
DEFAULT_OLLAMA_MODELS_VOLUME = "cynode-ollama-models"
# Where this repository keeps the Podman settings this kind of host needs.
REPO_CONTAINERS_CONF = Path(__file__).resolve().parents[3] / "deploy" / "podman" / "containers.conf"


class ConfigError(ValueError):
    """The node configuration is unusable; the message says which key and why."""


@dataclass(frozen=True)
class NodeConfig:
    node_slug: str
    psk: str = field(default="", repr=False)
    node_name: str = ""
    labels: tuple[str, ...] = ()
    orchestrator_url: str = DEFAULT_REST_URL
    control_plane_grpc: str = ""
    ca_file: str = ""
    # Pins: the SHA-256 fingerprint `certs init` printed; ca_file must match it.
    ca_fingerprint: str = ""
    # mTLS: the node's certificate (issued by the orchestrator's CA) and its key.
    client_cert: str = ""
    client_key: str = ""
    # Allow plain text to a non-loopback orchestrator / worker API address (a lab only).
    insecure: bool = False
    state_dir: Path = Path(DEFAULT_STATE_DIR)
    worker_api_host: str = "127.0.0.1"
    worker_api_port: int = DEFAULT_WORKER_API_PORT
    worker_api_base_url: str = ""
    worker_api_tls_cert: str = ""
    worker_api_tls_key: str = ""
    podman_socket: str = ""
    containers_conf: str = ""
    sandbox_image: str = "localhost/cynode-sandbox"
    max_concurrency: int = 2
    inference_mode: str = "none"
    # existing: the Ollama the node relays to. container: where the node publishes the
    # Ollama container it starts (127.0.0.1 and this URL's port).
    inference_url: str = "http://127.0.0.1:11434"
    # Model for prompt jobs that name none; empty: the orchestrator's default, else the
    # first model the node's Ollama lists.
    inference_default_model: str = ""
    inference_proxy_image: str = "localhost/cynode-proxy"
    inference_proxy_timeout_s: float = 120.0
    # Inference pods made ahead, while idle, so a job only starts its sandbox; 0: none.
    inference_warm_pods: int = 1
    inference_image: str = DEFAULT_OLLAMA_IMAGE
    inference_models_volume: str = DEFAULT_OLLAMA_MODELS_VOLUME
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0

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


# YAML path (dotted) -> NodeConfig field.
_YAML_KEYS: dict[str, str] = {
    "node.slug": "node_slug",
    "node.name": "node_name",
    "node.labels": "labels",
    "psk": "psk",
    "orchestrator.url": "orchestrator_url",
    "orchestrator.grpc": "control_plane_grpc",
    "orchestrator.ca_file": "ca_file",
    "orchestrator.ca_fingerprint": "ca_fingerprint",
    "orchestrator.client_cert": "client_cert",
    "orchestrator.client_key": "client_key",
    "insecure": "insecure",
    "state_dir": "state_dir",
    "worker_api.host": "worker_api_host",
    "worker_api.port": "worker_api_port",
    "worker_api.base_url": "worker_api_base_url",
    "worker_api.tls_cert": "worker_api_tls_cert",
    "worker_api.tls_key": "worker_api_tls_key",
    "podman.socket": "podman_socket",
    "podman.containers_conf": "containers_conf",
    "sandbox.image": "sandbox_image",
    "sandbox.max_concurrency": "max_concurrency",
    "inference.mode": "inference_mode",
    "inference.url": "inference_url",
    "inference.default_model": "inference_default_model",
    "inference.proxy_image": "inference_proxy_image",
    "inference.proxy_timeout_seconds": "inference_proxy_timeout_s",
    "inference.warm_pods": "inference_warm_pods",
    "inference.image": "inference_image",
    "inference.models_volume": "inference_models_volume",
    "reconnect.initial_seconds": "reconnect_initial_s",
    "reconnect.max_seconds": "reconnect_max_s",
}

ENV_KEYS: dict[str, str] = {
    "CYNODE_ORCHESTRATOR_URL": "orchestrator_url",
    "CYNODE_CONTROL_PLANE_GRPC": "control_plane_grpc",
    "CYNODE_CA_FILE": "ca_file",
    "CYNODE_CA_FINGERPRINT": "ca_fingerprint",
    "CYNODE_CLIENT_CERT": "client_cert",
    "CYNODE_CLIENT_KEY": "client_key",
    "CYNODE_INSECURE": "insecure",
    "CYNODE_WORKER_API_TLS_CERT": "worker_api_tls_cert",
    "CYNODE_WORKER_API_TLS_KEY": "worker_api_tls_key",
    "NODE_PSK": "psk",
    "CYNODE_NODE_SLUG": "node_slug",
    "CYNODE_NODE_STATE_DIR": "state_dir",
    "CYNODE_WORKER_API_PORT": "worker_api_port",
    "CYNODE_WORKER_API_HOST": "worker_api_host",
    "CYNODE_PODMAN_SOCKET": "podman_socket",
    "CYNODE_SANDBOX_IMAGE": "sandbox_image",
    "CYNODE_MAX_CONCURRENCY": "max_concurrency",
    "CYNODE_INFERENCE_MODE": "inference_mode",
    "CYNODE_INFERENCE_URL": "inference_url",
    "CYNODE_INFERENCE_DEFAULT_MODEL": "inference_default_model",
    "CYNODE_INFERENCE_PROXY_IMAGE": "inference_proxy_image",
    "CYNODE_INFERENCE_PROXY_TIMEOUT": "inference_proxy_timeout_s",
    "CYNODE_INFERENCE_WARM_PODS": "inference_warm_pods",
    "CYNODE_INFERENCE_IMAGE": "inference_image",
}

_INT_FIELDS = {"worker_api_port", "max_concurrency", "inference_warm_pods"}
_FLOAT_FIELDS = {"reconnect_initial_s", "reconnect_max_s", "inference_proxy_timeout_s"}


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
    if name == "insecure":
        text = str(value).strip().lower()
        if text not in ("1", "true", "yes", "on", "0", "false", "no", "off", ""):
            raise ConfigError(f"{source}: expected true or false, got {value!r}")
        return text in ("1", "true", "yes", "on")
    if name == "state_dir":
        return Path(str(value)).expanduser()
    if name == "labels":
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
    config = NodeConfig(**values)
    return validate(config)


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
