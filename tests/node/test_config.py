"""Node configuration: YAML, env overrides, validation."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from cynode.node.config import (
    REPO_CONTAINERS_CONF,
    ConfigError,
    NodeConfig,
    load_config,
    settable,
    with_overrides,
)

YAML = """
node: {slug: yaml-node, name: Big box, labels: [gpu, eu]}
psk: from-yaml
orchestrator: {url: "https://cp.example:12082", ca_file: /etc/ca.pem}
state_dir: /srv/cynode
worker_api: {host: 0.0.0.0, port: 12091, base_url: "http://box:12091"}
podman: {socket: /run/podman/podman.sock, containers_conf: /etc/cynode/containers.conf}
sandbox: {image: localhost/other, max_concurrency: 4, warm_containers: 3}
inference: {mode: existing, url: "http://127.0.0.1:11434", warm_pods: 2, job_max_connections: 200}
reconnect: {initial_seconds: 1, max_seconds: 10}
"""


def test_yaml_then_env_overrides(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(YAML)
    config = load_config(path, env={})
    assert config.node_slug == "yaml-node"
    assert config.labels == ("gpu", "eu")
    assert config.state_dir == Path("/srv/cynode")
    assert config.grpc_target == "cp.example:12083"
    assert config.uses_tls
    assert config.advertised_worker_api == "http://box:12091"
    assert config.max_concurrency == 4
    assert config.effective_containers_conf == "/etc/cynode/containers.conf"
    assert config.inference_warm_pods == 2
    assert config.inference_job_max_connections == 200
    assert config.sandbox_warm_containers == 3
    env = {
        "CYNODE_ORCHESTRATOR_URL": "http://10.0.0.5:12082",
        "CYNODE_CONTROL_PLANE_GRPC": "10.0.0.5:9999",
        "NODE_PSK": "from-env",
        "CYNODE_NODE_SLUG": "env-node",
        "CYNODE_NODE_STATE_DIR": str(tmp_path / "s"),
        "CYNODE_WORKER_API_PORT": "12099",
        "CYNODE_PODMAN_SOCKET": "/tmp/p.sock",
        "CYNODE_MAX_CONCURRENCY": "3",
        "CYNODE_INFERENCE_WARM_PODS": "0",
        "CYNODE_SANDBOX_WARM_CONTAINERS": "0",
    }
    config = load_config(path, env=env)
    assert (config.node_slug, config.psk, config.worker_api_port) == ("env-node", "from-env", 12099)
    assert config.grpc_target == "10.0.0.5:9999"
    assert config.state_dir == tmp_path / "s"
    assert config.podman_socket == "/tmp/p.sock"
    assert config.max_concurrency == 3
    assert config.inference_warm_pods == 0  # 0 turns warm pods off
    assert config.sandbox_warm_containers == 0  # and warm sandboxes
    assert "from-env" not in repr(config)


def test_defaults_without_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONTAINERS_CONF", raising=False)
    config = load_config(None, env={"CYNODE_NODE_SLUG": "n1"})
    assert config.grpc_target == "127.0.0.1:12083"
    assert not config.uses_tls
    assert config.worker_api_port == 12090
    assert config.inference_warm_pods == 1
    assert config.inference_job_max_connections == 64
    assert config.sandbox_warm_containers == 2
    assert config.sandbox_warm_idle_s == 600
    assert config.advertised_worker_api == "http://127.0.0.1:12090"
    assert config.effective_containers_conf == str(REPO_CONTAINERS_CONF)
    monkeypatch.setenv("CONTAINERS_CONF", "/x.conf")
    assert config.effective_containers_conf == "/x.conf"
    assert load_config(None, env={}).node_slug  # the host name


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("node: {slug: a}\nbogus: 1\n", "unknown key 'bogus'"),
        ("- a list\n", "mapping at the top level"),
        ("node: {slug: a}\nworker_api: {port: abc}\n", "expected a number"),
        ("node: {slug: a}\nworker_api: {port: 70000}\n", "worker_api.port"),
        ("node: {slug: a}\nsandbox: {max_concurrency: 0}\n", "max_concurrency"),
        ("node: {slug: a}\ninference: {mode: cloud}\n", "inference.mode"),
        ("node: {slug: a}\ninference: {warm_pods: -1}\n", "inference.warm_pods"),
        ("node: {slug: a}\ninference: {job_max_connections: 0}\n", "job_max_connections"),
        ("node: {slug: a}\ninference: {job_max_connections: 1025}\n", "1-1024"),
        ("node: {slug: a}\nsandbox: {warm_containers: -1}\n", "sandbox.warm_containers"),
        ("node: {slug: a}\nsandbox: {warm_idle_seconds: -1}\n", "sandbox.warm_idle_seconds"),
        ("node: {slug: a}\norchestrator: {url: 'ftp://x'}\n", "orchestrator.url"),
        ("node: {slug: a}\nreconnect: {initial_seconds: 5, max_seconds: 1}\n", "reconnect"),
        ("node: {slug: a, labels: 3}\n", "list of strings"),
        ("node: [unclosed\n", "not valid YAML"),
        ("node: {slug: ''}\n", "node.slug is empty"),
    ],
)
def test_bad_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(path, env={})


def test_missing_file_and_env_labels(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml", env={})
    config = with_overrides(NodeConfig(node_slug="n"), labels=("a",))
    assert config.labels == ("a",)
    with pytest.raises(ConfigError):
        with_overrides(config, max_concurrency=-1)


def test_every_yaml_key_has_an_env_variable_and_new_ones_work(tmp_path: Path) -> None:
    rows = settable()
    assert {f.name for f, _ in rows} == {f.name for f in fields(NodeConfig)}
    assert len({s.env for _, s in rows}) == len(rows) == len({s.key for _, s in rows})
    env = {
        "CYNODE_NODE_SLUG": "n",
        "CYNODE_NODE_NAME": "Big box",
        "CYNODE_NODE_LABELS": "gpu, eu",
        "CYNODE_WORKER_API_BASE_URL": "http://box:1",
        "CYNODE_PODMAN_CONTAINERS_CONF": "/etc/c.conf",
        "CYNODE_INFERENCE_MODELS_VOLUME": "models",
        "CYNODE_RECONNECT_INITIAL_SECONDS": "2",
        "CYNODE_RECONNECT_MAX_SECONDS": "8",
    }
    config = load_config(None, env=env)
    assert (config.node_name, config.labels) == ("Big box", ("gpu", "eu"))
    assert config.advertised_worker_api == "http://box:1"
    assert config.effective_containers_conf == "/etc/c.conf"
    assert config.inference_models_volume == "models"
    assert (config.reconnect_initial_s, config.reconnect_max_s) == (2.0, 8.0)
    with pytest.raises(ConfigError, match="CYNODE_RECONNECT_MAX_SECONDS: expected a number"):
        load_config(None, env={**env, "CYNODE_RECONNECT_MAX_SECONDS": "soon"})
    with pytest.raises(ConfigError, match="CYNODE_INSECURE: expected true or false"):
        load_config(None, env={**env, "CYNODE_INSECURE": "maybe"})


def test_sandbox_tcp_defaults_on_and_turns_off_by_yaml_or_env(tmp_path: Path) -> None:
    assert load_config(None, env={}).inference_sandbox_tcp is True
    path = tmp_path / "node.yaml"
    path.write_text("inference: {sandbox_tcp: false}\n")
    assert load_config(path, env={}).inference_sandbox_tcp is False
    env = {"CYNODE_INFERENCE_SANDBOX_TCP": "false"}
    assert load_config(None, env=env).inference_sandbox_tcp is False


def test_upstream_inference_backend_section_maps_onto_ours(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(
        "inference_backend: {enabled: true, kind: ollama, model: qwen3:8b}\n"
        "inference: {url: 'http://127.0.0.1:11434'}\n"
    )
    config = load_config(path, env={})
    assert (config.inference_mode, config.inference_default_model) == ("existing", "qwen3:8b")
    path.write_text("inference_backend: {enabled: false}\ninference: {mode: container}\n")
    assert load_config(path, env={}).inference_mode == "none"
    # Ours wins where both are set: the section only fills what ours leaves open.
    path.write_text(
        "inference_backend: {enabled: true, model: a}\n"
        "inference: {mode: container, default_model: b}\n"
    )
    config = load_config(path, env={})
    assert (config.inference_mode, config.inference_default_model) == ("container", "b")


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("inference_backend: {enabled: maybe}\n", "inference_backend.enabled"),
        ("inference_backend: {kind: vllm}\n", "inference_backend.kind"),
    ],
)
def test_a_bad_inference_backend_section_names_its_key(
    tmp_path: Path, yaml_text: str, message: str
) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message):
        load_config(path, env={})
