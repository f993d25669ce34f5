"""cynode.testing.launchers: each CLI's command line and env, and the shared
start/wait/stop/kill9/restart, on a toy server and on a real orchestrator."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from cynode.testing.launchers import (
    CONTAINERS_CONF,
    DevModel,
    Launcher,
    Node,
    Orchestrator,
    hermetic_env,
)
from cynode.testing.ports import free_port
from cynode.testing.processes import BIN, Proc
from cynode.testing.waiting import NotReady, ProcessExited, http_ok


@dataclass
class Toy(Launcher):
    """python -m http.server: a launcher with nothing of CyNode in it."""

    log: Path
    port: int = field(default_factory=free_port)
    exit_code: int | None = None
    name: str = "toy"
    prefix: Sequence[str] = ()
    proc: Proc | None = None
    ready_timeout: float = 30.0
    grace: float = 5.0

    def argv(self) -> list[str]:
        if self.exit_code is not None:
            return [sys.executable, "-c", f"print('dying'); raise SystemExit({self.exit_code})"]
        return [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(self.port)]

    def environ(self) -> dict[str, str]:
        return hermetic_env()

    def ready(self) -> bool:
        return http_ok(f"http://127.0.0.1:{self.port}/")


def test_hermetic_env_drops_cynode_settings_and_secrets() -> None:
    env = hermetic_env(
        {"PATH": "/bin", "CYNODE_LEASE_SECONDS": "1", "NODE_PSK": "p", "ADMIN_PASSWORD": "a"}
    )
    assert env == {"PATH": "/bin"}


def test_a_launcher_starts_waits_kills_restarts_and_stops(tmp_path: Path) -> None:
    toy = Toy(tmp_path / "toy.log")
    with pytest.raises(RuntimeError, match="toy was never started"):
        toy.running()
    toy.stop()  # never started: nothing to do
    assert not toy.alive()
    first = toy.start()
    assert toy.alive() and toy.ready()
    toy.kill9()
    assert not first.alive()
    second = toy.restart()
    assert second.pid != first.pid and toy.ready()
    assert first.handle is None
    toy.stop()
    assert not toy.alive()
    assert "GET /" in toy.tail()


def test_a_launcher_that_dies_fails_its_wait_with_the_log(tmp_path: Path) -> None:
    toy = Toy(tmp_path / "toy.log", exit_code=3)
    with pytest.raises(ProcessExited, match="toy exited while waiting for toy ready:\ndying"):
        toy.start()
    assert toy.running().returncode == 3


def test_a_launcher_not_ready_in_time(tmp_path: Path) -> None:
    toy = Toy(tmp_path / "toy.log")
    toy.start(wait=False)
    try:
        with pytest.raises(NotReady):
            toy.wait_ready(0.3, check=lambda: False)
    finally:
        toy.stop()


def test_orchestrator_command_env_and_urls(tmp_path: Path) -> None:
    orch = Orchestrator(
        tmp_path / "data",
        "pw",
        "psk",
        ports={"gateway_rest": 1},
        settings={"CYNODE_LEASE_SECONDS": "3"},
        args=["--dev"],
        base_env={"PATH": "/bin", "CYNODE_X": "kept"},
    )
    assert orch.argv() == [str(BIN / "cynode-orchestrator"), "serve", "--dev"]
    assert orch.log == tmp_path / "orchestrator.log"
    env = orch.environ()
    assert env["CYNODE_X"] == "kept" and env["PATH"] == "/bin"
    assert env["ADMIN_PASSWORD"] == "pw" and env["NODE_PSK"] == "psk"
    assert env["CYNODE_DATABASE_URL"] == f"sqlite:///{tmp_path / 'data' / 'cynode.db'}"
    assert env["CYNODE_GATEWAY_REST_PORT"] == "1" and env["CYNODE_LEASE_SECONDS"] == "3"
    ports = {orch.ports[k] for k in ("gateway_grpc", "control_rest", "control_grpc")}
    assert len(ports) == 3 and 1 not in ports
    assert orch.gateway_url == "http://127.0.0.1:1"
    assert orch.gateway_grpc == f"127.0.0.1:{orch.ports['gateway_grpc']}"
    assert orch.control_url == f"http://127.0.0.1:{orch.ports['control_rest']}"
    assert orch.control_grpc == f"127.0.0.1:{orch.ports['control_grpc']}"
    tls = Orchestrator(tmp_path, "p", "k", database_url="postgresql://x", host="h", scheme="https")
    assert tls.gateway_url.startswith("https://h:") and tls.db_url == "postgresql://x"


def test_node_command_env_and_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONTAINERS_CONF", raising=False)
    monkeypatch.setenv("CYNODE_LEASE_SECONDS", "9")
    node = Node(tmp_path / "state", "psk", control_grpc="127.0.0.1:5", slug="n1")
    assert node.argv() == [str(BIN / "cynode-node"), "run"]
    env = node.environ()
    assert "CYNODE_LEASE_SECONDS" not in env  # the caller's settings stay out
    assert env["CONTAINERS_CONF"] == str(CONTAINERS_CONF)
    assert env["NODE_PSK"] == "psk" and env["CYNODE_NODE_SLUG"] == "n1"
    assert env["CYNODE_CONTROL_PLANE_GRPC"] == "127.0.0.1:5"
    assert "CYNODE_ORCHESTRATOR_URL" not in env and "CYNODE_INFERENCE_MODE" not in env
    assert env["CYNODE_NODE_STATE_DIR"] == str(tmp_path / "state")
    assert env["CYNODE_WORKER_API_PORT"] == str(node.worker_port)
    assert node.worker_url == f"http://127.0.0.1:{node.worker_port}"
    assert not node.ready()
    assert Node(tmp_path, inference_url="").environ()["CYNODE_INFERENCE_MODE"] == "none"
    relayed = Node(tmp_path, inference_url="http://m:1", settings={"CYNODE_X": "y"}).environ()
    assert relayed["CYNODE_INFERENCE_MODE"] == "existing"
    assert relayed["CYNODE_INFERENCE_URL"] == "http://m:1" and relayed["CYNODE_X"] == "y"
    configured = Node(tmp_path / "b" / "state", config={"sandbox": {"max_concurrency": 2}})
    configured.prepare()
    assert configured.argv()[-2:] == ["-c", str(tmp_path / "b" / "node.yaml")]
    assert yaml.safe_load(configured.config_path.read_text()) == {"sandbox": {"max_concurrency": 2}}


def test_dev_model_command_and_env(tmp_path: Path) -> None:
    model = DevModel(tmp_path / "model.log", port=7, base_env={"A": "b"})
    assert model.argv() == [str(BIN / "cynode-node"), "dev-inference", "--listen", "127.0.0.1:7"]
    assert model.environ() == {"A": "b", "PYTHONUNBUFFERED": "1"}
    assert model.url == "http://127.0.0.1:7" and not model.ready()
    assert "PYTHONUNBUFFERED" in DevModel(tmp_path / "m.log").environ()
