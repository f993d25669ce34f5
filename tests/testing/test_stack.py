"""cynode.testing.stack: credentials, settings from `make up`'s env, what each process
of a stack is started with, the state file, the clean-up helpers, and a stack's
orchestrator for real (the node needs Podman: the fault and security tests run it)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from cynode.testing.stack import (
    DEFAULT_DIR,
    PORT_DEFAULTS,
    Stack,
    StackSettings,
    iter_secrets,
    kill_strays,
    load_credentials,
    remove_containers,
    running_state,
)
from cynode.testing.waiting import NotReady, wait_until
from tests.fixtures.podman import SANDBOX_IMAGE as IMAGE


def test_credentials_come_from_the_env_else_are_generated_once(tmp_path: Path) -> None:
    given = load_credentials(tmp_path, {"ADMIN_PASSWORD": "a-pw", "NODE_PSK": "a-psk"})
    assert (given.admin_password, given.node_psk, given.generated) == ("a-pw", "a-psk", False)
    assert not (tmp_path / "dev-credentials").exists()
    made = load_credentials(tmp_path, {})
    assert made.generated and made.admin_password.startswith("dev-")
    path = tmp_path / "dev-credentials"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_credentials(tmp_path, {"NODE_PSK": "mine"})
    assert (again.admin_password, again.node_psk, again.generated) == (
        made.admin_password,
        "mine",
        False,
    )
    assert "a-pw" not in repr(given)


def test_settings_from_make_ups_env(tmp_path: Path) -> None:
    settings = StackSettings.from_env(
        {
            "CYNODE_GATEWAY_REST_PORT": "13080",
            "CYNODE_DEV_MODEL_PORT": "13434",
            "CYNODE_INFERENCE_MODE": "none",
            "CYNODE_DATABASE_URL": "postgresql://db",
            "CYNODE_STACK_DIR": str(tmp_path),
        }
    )
    assert settings.state_dir == tmp_path and settings.inherit_env
    assert settings.ports == {**PORT_DEFAULTS, "gateway_rest": 13080, "model": 13434}
    assert not settings.inference and settings.database_url == "postgresql://db"
    default = StackSettings.from_env({"OLLAMA_URL": "http://o:1"})
    assert default.state_dir == DEFAULT_DIR and default.inference_url == "http://o:1"
    free = StackSettings.free(tmp_path, node_slug="s")
    assert set(free.ports) == set(PORT_DEFAULTS) and not free.inherit_env
    assert free.node_slug == "s"


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_PASSWORD", "stack-admin-pw")
    monkeypatch.setenv("NODE_PSK", "stack-node-psk")
    monkeypatch.setenv("CYNODE_SOMETHING", "from-the-shell")


@pytest.mark.usefixtures("secrets_env")
def test_what_each_process_of_a_stack_is_started_with(tmp_path: Path) -> None:
    settings = StackSettings.free(
        tmp_path,
        lease_seconds=3,
        heartbeat_seconds=1,
        node_slug="n",
        orchestrator_env={"CYNODE_X": "1"},
        node_env={"CYNODE_Y": "2"},
        node_yaml="reconnect:\n  initial_seconds: 0.2\n",
    )
    stack = Stack(settings)
    orch = stack.orchestrator_env()
    assert orch["ADMIN_PASSWORD"] == "stack-admin-pw" and orch["NODE_PSK"] == "stack-node-psk"
    assert orch["CYNODE_LEASE_SECONDS"] == "3" and orch["CYNODE_HEARTBEAT_SECONDS"] == "1"
    assert orch["CYNODE_REQUIRE_INFERENCE"] == "true" and orch["CYNODE_X"] == "1"
    assert orch["CYNODE_GATEWAY_REST_PORT"] == str(settings.ports["gateway_rest"])
    assert "CYNODE_SOMETHING" not in orch  # a test's stack ignores the shell
    assert stack.database_url == f"sqlite:///{stack.dir / 'orchestrator' / 'cynode.db'}"
    node = stack.node.environ()
    assert node["CYNODE_ORCHESTRATOR_URL"] == stack.control_url
    assert node["CYNODE_CONTROL_PLANE_GRPC"] == stack.control_grpc
    assert node["CYNODE_INFERENCE_MODE"] == "existing"
    assert node["CYNODE_INFERENCE_URL"] == stack.model_url
    assert node["CYNODE_Y"] == "2" and node["CYNODE_NODE_SLUG"] == "n"
    assert stack.node.config == {"reconnect": {"initial_seconds": 0.2}}
    assert stack.node.log == stack.logs / "node.log"
    assert stack.worker_url == f"http://127.0.0.1:{settings.ports['worker_api']}"
    assert stack.gateway_grpc == f"127.0.0.1:{settings.ports['gateway_grpc']}"
    assert stack.procs == {} and stack.log_files() == []
    made_up = Stack(StackSettings.from_env({**os.environ}, tmp_path / "up"))
    assert made_up.orchestrator_env()["CYNODE_SOMETHING"] == "from-the-shell"


@pytest.mark.usefixtures("secrets_env")
def test_a_sandbox_only_stack_starts_no_model_and_says_so(tmp_path: Path) -> None:
    stack = Stack(StackSettings.free(tmp_path, inference=False))
    stack.start_model()
    assert "model" not in stack.procs
    assert stack.node.environ()["CYNODE_INFERENCE_MODE"] == "none"
    assert stack.orchestrator_env()["CYNODE_REQUIRE_INFERENCE"] == "false"


@pytest.mark.usefixtures("secrets_env")
def test_the_state_file_and_the_secrets_of_a_stack(tmp_path: Path) -> None:
    stack = Stack(StackSettings.free(tmp_path, inference_url="http://ollama:1"))
    assert stack.model_url == "http://ollama:1"
    assert running_state(stack.dir) is None
    stack.save()
    state = running_state(stack.dir)
    assert state is not None and state["gateway_url"] == stack.gateway_url
    assert state["database_url_kind"] == "sqlite" and state["procs"] == {}
    assert "stack-admin-pw" not in (stack.dir / "stack.json").read_text()
    assert stack.node_id() == ""
    (stack.dir / "orchestrator").mkdir()
    (stack.dir / "orchestrator" / "jwt_secret").write_text("jwt-secret\n")
    stack.node_state_dir.mkdir()
    session = {"node_id": "NODE1", "node_jwt": "node-jwt"}
    (stack.node_state_dir / "session.json").write_text(json.dumps(session))
    assert stack.node_id() == "NODE1"
    assert list(iter_secrets(stack)) == [
        "stack-admin-pw",
        "stack-node-psk",
        "jwt-secret",
        "node-jwt",
    ]


def test_clean_up_helpers(tmp_path: Path) -> None:
    assert remove_containers("") == 0
    assert remove_containers("no-such-node-01") == 0
    # A stand-in for a dead node's `podman system service`: named by its state dir.
    stray = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "podman", str(tmp_path / "node")]
    )
    try:
        wait_until(lambda: b"podman" in Path(f"/proc/{stray.pid}/cmdline").read_bytes(), 10, "argv")
        assert kill_strays(tmp_path / "node") == 1
        assert stray.wait(10) == -9
    finally:
        stray.kill()
    assert kill_strays(tmp_path / "elsewhere") == 0


def _labelled(listing: list[str], label: str) -> list[str]:
    out = subprocess.run(
        ["podman", *listing, "-q", "--filter", f"label={label}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


@pytest.mark.podman
def test_remove_containers_takes_a_nodes_pods_containers_and_volumes() -> None:
    # What a killed node leaves: a warm pod with its sidecar, a container and a volume.
    node_id = f"stack-test-{os.getpid()}"
    label = f"cynode.node_id={node_id}"
    other = f"cynode.node_id={node_id}-other"
    pod = f"stack-test-pod-{os.getpid()}"
    volume = f"stack-test-vol-{os.getpid()}"
    podman = ["podman", "--log-level", "error"]
    subprocess.run([*podman, "pod", "create", "--label", label, "--name", pod], check=True)
    subprocess.run([*podman, "create", "--pod", pod, "--label", label, IMAGE, "true"], check=True)
    subprocess.run([*podman, "create", "--label", label, IMAGE, "true"], check=True)
    subprocess.run([*podman, "volume", "create", "--label", label, volume], check=True)
    subprocess.run([*podman, "create", "--label", other, IMAGE, "true"], check=True)
    try:
        # The pod (its member and infra container with it), the container, the volume.
        assert remove_containers(node_id) == 3
        assert _labelled(["pod", "ps"], label) == []
        assert _labelled(["container", "ps", "-a"], label) == []
        assert _labelled(["volume", "ls"], label) == []
        assert len(_labelled(["container", "ps", "-a"], other)) == 1  # another node's stays
    finally:
        subprocess.run([*podman, "pod", "rm", "-f", "--ignore", pod], check=False)
        subprocess.run([*podman, "volume", "rm", "-f", volume], check=False)
        for name in _labelled(["container", "ps", "-a"], label) + _labelled(
            ["container", "ps", "-a"], other
        ):
            subprocess.run([*podman, "rm", "-f", name], check=False)


@pytest.mark.slow
@pytest.mark.usefixtures("secrets_env")
def test_a_stacks_orchestrator_for_real(tmp_path: Path) -> None:
    said: list[str] = []
    stack = Stack(StackSettings.free(tmp_path, inference=False), say=said.append)
    try:
        first = stack.start_orchestrator()
        assert said == [f"starting the orchestrator on {stack.gateway_url} ..."]
        stack.procs["orchestrator"].kill9()
        second = stack.restart_orchestrator()
        assert second.pid != first.pid
        stack.wait_healthy()
        # The same data dir after kill -9: the admin made by the first start logs in.
        login = httpx.post(
            f"{stack.gateway_url}/v1/auth/login",
            json={"handle": "admin", "password": "stack-admin-pw"},
            timeout=10,
        )
        assert login.status_code == 200, login.text
        # No node: both /readyz cannot say ready.
        with pytest.raises(NotReady, match="both /readyz"):
            stack.wait_ready(timeout=0.5)
        stack.save()
        state = running_state(stack.dir)
        assert state is not None and set(state["procs"]) == {"orchestrator"}  # type: ignore[call-overload]
    finally:
        stack.stop()
    orchestrator = stack.procs["orchestrator"]
    assert orchestrator.returncode == 0, orchestrator.tail()
    assert "stack-admin-pw" not in orchestrator.text()
    assert stack.log_files() == [stack.logs / "orchestrator.log"]
