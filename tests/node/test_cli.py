"""`cynode-node doctor` and `run` as a user calls them (doctor in process, run as a real
subprocess that is stopped with SIGTERM)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import httpx
import pytest

from cynode.node import cli
from cynode.node.config import NodeConfig
from cynode.node.doctor import (
    Check,
    check_containers_conf,
    check_orchestrator,
    check_service_and_images,
    check_state_dir,
)
from cynode.testing import Node, free_port, until
from tests.node.cp_server import PSK, FakeControlPlane


def env_for(target: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CYNODE_", "NODE_PSK"))}
    env.update(
        CYNODE_CONTROL_PLANE_GRPC=target,
        NODE_PSK=PSK,
        CYNODE_NODE_SLUG="cli-node",
        CYNODE_NODE_STATE_DIR=str(tmp_path / "state"),
        CYNODE_WORKER_API_PORT=str(free_port()),
    )
    env.update(extra)
    return env


@pytest.mark.podman
async def test_doctor_passes_with_everything_in_place(
    control_plane: tuple[FakeControlPlane, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for key, value in env_for(control_plane[1], tmp_path).items():
        monkeypatch.setenv(key, value)
    code = await asyncio.to_thread(cli.main, ["doctor"])
    out = capsys.readouterr().out
    assert code == 0, out
    names = [line[6:22].strip() for line in out.splitlines()[:-1]]
    assert names == [
        "podman",
        "runc",
        "containers.conf",
        "state dir",
        "workspace bound",
        "user namespace",
        "podman service",
        "images",
        "psk",
        "orchestrator",
        "inference",
    ]
    assert out.splitlines()[-1] == "11/11 checks passed"
    assert PSK not in out


async def test_doctor_reports_failures_with_fixes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = env_for(f"127.0.0.1:{free_port()}", tmp_path, CYNODE_SANDBOX_IMAGE="localhost/absent")
    env.pop("NODE_PSK")
    env["CYNODE_INFERENCE_MODE"] = "existing"
    env["CYNODE_INFERENCE_URL"] = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setattr(os, "environ", env)
    code = await asyncio.to_thread(cli.main, ["doctor", "-v"])
    out = capsys.readouterr().out
    assert code == 1
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith("FAIL")}
    assert "make images" in lines["images"]
    assert "NODE_PSK" in lines["psk"]
    assert "start the orchestrator" in lines["orchestrator"]
    assert "unreachable" in lines["inference"]


async def test_doctor_checks_on_bad_setups(tmp_path: Path) -> None:
    base = NodeConfig(node_slug="d", state_dir=tmp_path / "s")
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    check = await check_state_dir(NodeConfig(node_slug="d", state_dir=loose))
    assert not check.ok and "chmod 700" in check.fix
    assert (await check_state_dir(base)).ok
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    os.chown(other, 4242, 4242)
    assert not (await check_state_dir(NodeConfig(node_slug="d", state_dir=other))).ok
    (tmp_path / "good").mkdir(mode=0o700)
    assert (await check_state_dir(NodeConfig(node_slug="d", state_dir=tmp_path / "good"))).ok
    missing_conf = NodeConfig(node_slug="d", containers_conf=str(tmp_path / "none.conf"))
    check = await check_containers_conf(missing_conf)
    assert not check.ok and "deploy/podman/containers.conf" in check.fix
    no_ca = NodeConfig(node_slug="d", ca_file=str(tmp_path / "ca.pem"))
    assert "CA file" in (await check_orchestrator(no_ca)).detail
    bad_socket = NodeConfig(node_slug="d", podman_socket=str(tmp_path / "no.sock"))
    [service] = await asyncio.wait_for(check_service_and_images(bad_socket), 60)
    assert not service.ok and "CYNODE_PODMAN_SOCKET" in service.fix
    assert Check("x", False, "broken", "do y").line().endswith("-> fix: do y")


def test_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "node.yaml"
    path.write_text("nonsense: 1\n")
    assert cli.main(["run", "--config", str(path)]) == 2
    assert "unknown key 'nonsense'" in capsys.readouterr().err


def test_config_path_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CYNODE_NODE_CONFIG", str(tmp_path / "a.yaml"))
    assert cli._config_path(None) == tmp_path / "a.yaml"
    assert cli._config_path(tmp_path / "b.yaml") == tmp_path / "b.yaml"
    monkeypatch.delenv("CYNODE_NODE_CONFIG")
    assert cli._config_path(None) in (None, cli.DEFAULT_CONFIG)


def test_dev_inference_is_delegated(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    seen: list[list[str]] = []
    fake = types.ModuleType("cynode.node.devinference")

    def fake_main(argv: list[str]) -> int:
        seen.append(argv)
        return 7

    fake.main = fake_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cynode.node.devinference", fake)
    import cynode.node

    monkeypatch.setattr(cynode.node, "devinference", fake, raising=False)
    assert cli.main(["dev-inference", "--port", "1"]) == 7
    assert seen == [["--port", "1"]]


@pytest.mark.podman
async def test_run_subprocess_becomes_ready_and_stops_on_sigterm(
    control_plane: tuple[FakeControlPlane, str], tmp_path: Path
) -> None:
    node = Node(tmp_path / "state", PSK, control_grpc=control_plane[1], slug="cli-node")
    node.start(wait=False)
    answers: list[str] = []
    http = httpx.AsyncClient()

    async def ready() -> bool:
        try:
            answer = await http.get(f"{node.worker_url}/readyz")
        except httpx.TransportError:
            return False
        answers.append(answer.text)
        return answer.status_code == 200

    try:
        # Polled from this event loop: the fake control plane the node registers with
        # runs on it, so a blocking wait would starve it.
        await until(ready, 60, "the node's /readyz")
        assert answers[-1] == "ready", answers[-5:]
        assert control_plane[0].registrations[0].capability.node.node_slug == "cli-node"
    finally:
        await http.aclose()
        await asyncio.to_thread(node.stop, 60)
    output = node.running().text()
    assert node.running().returncode == 0, output[-2000:]
    assert PSK not in output
