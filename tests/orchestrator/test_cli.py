"""`cynode-orchestrator`: migrate, user admin, serve (in process and as a subprocess)."""

from __future__ import annotations

import asyncio
import io
import sys
from dataclasses import fields, replace
from pathlib import Path

import httpx
import pytest

from cynode.orchestrator import cli
from cynode.orchestrator.config import Settings, settables, shown_default
from cynode.orchestrator.store import User, make_engine, session_factory
from cynode.testing import Orchestrator, free_port, http_ok
from tests.orchestrator.gatewaykit import unique


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("ADMIN_PASSWORD", "NODE_PSK", "CYNODE_DATABASE_URL", "CYNODE_JWT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CYNODE_DATA_DIR", str(tmp_path))
    return tmp_path


def _stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))


async def _user(data_dir: Path, handle: str) -> User | None:
    engine = make_engine(f"sqlite:///{data_dir / 'cynode.db'}")
    try:
        async with session_factory(engine)() as s:
            from sqlmodel import select

            return (await s.exec(select(User).where(User.handle == handle))).first()
    finally:
        await engine.dispose()


def test_migrate_and_user_commands(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["migrate"]) == 0
    _stdin(monkeypatch, "first password\n")
    assert cli.main(["user", "create", "alice", "--admin", "--password-stdin"]) == 0
    user = asyncio.run(_user(env, "alice"))
    assert user is not None and user.is_admin and user.password_hash.startswith("$argon2id$")
    _stdin(monkeypatch, "again pass\n")
    assert cli.main(["user", "create", "alice", "--password-stdin"]) == 1
    assert "already exists" in capsys.readouterr().err
    _stdin(monkeypatch, "second password\n")
    assert cli.main(["user", "passwd", "alice", "--password-stdin"]) == 0
    assert cli.main(["user", "disable", "alice"]) == 0
    user = asyncio.run(_user(env, "alice"))
    assert user is not None and not user.is_active
    assert cli.main(["user", "disable", "bob"]) == 1
    _stdin(monkeypatch, "short\n")
    assert cli.main(["user", "create", "bob", "--password-stdin"]) == 1
    _stdin(monkeypatch, "\n")
    assert cli.main(["user", "create", "bob", "--password-stdin"]) == 2
    _stdin(monkeypatch, "")
    assert cli.main(["user", "create", "bob"]) == 2  # no terminal to prompt on
    out = capsys.readouterr().err
    assert "first password" not in out and "second password" not in out


def test_bad_config_and_database_exit_2(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli.main(["migrate", "--config", str(env / "missing.yaml")]) == 2
    monkeypatch.setenv("CYNODE_DATABASE_URL", "mysql://x/y")
    assert cli.main(["migrate"]) == 2


def test_serve_refuses_without_admin_password(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["serve"]) == 2
    assert "ADMIN_PASSWORD is not set" in capsys.readouterr().err


def test_serve_help_explains_the_settings(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    text = capsys.readouterr().out
    for name in ("ADMIN_PASSWORD", "CYNODE_DATABASE_URL", "CYNODE_REQUIRE_INFERENCE", "--dev"):
        assert name in text
    # Every setting the orchestrator reads, with its YAML key, env variable and help.
    defaults = Settings()
    documented = settables(defaults)
    names = {item.field.name for _, item in documented}
    assert names >= {f.name for f in fields(Settings)} - {"control_plane"}
    flat = " ".join(text.split())  # argparse may wrap long help lines
    for holder, item in documented:
        s = item.setting
        line = next((row for row in text.splitlines() if row.split()[:1] == [s.env]), "")
        assert f"{s.key} [{shown_default(item, holder)}]" in line, s.key
        assert s.help in flat, s.key


@pytest.mark.parametrize(
    "argv",
    [[], ["migrate"], ["user", "create", "x"], ["user", "passwd", "x"], ["user", "disable", "x"]],
)
def test_every_command_help_says_where_settings_are(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([*argv[:2], "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "cynode-orchestrator serve --help" in text
    if argv:
        assert "CYNODE_DATABASE_URL" in text


async def test_serve_in_dev_prints_a_generated_password_once(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = replace(Settings(data_dir=env, dev=True), gateway_rest_port=0, gateway_grpc_port=0)
    stop = asyncio.Event()
    task = asyncio.create_task(cli.serve(settings, stop=stop))
    for _ in range(500):
        if "user gateway: REST" in capsys.readouterr().err + "":
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 10)
    user = await _user(env, "admin")
    assert user is not None and user.is_admin
    # A second start keeps the existing admin and prints no password.
    stop = asyncio.Event()
    stop.set()
    await cli.serve(settings, stop=stop)
    assert "development password" not in capsys.readouterr().err


def test_serve_subprocess_starts_logs_in_and_stops_on_sigterm(env: Path) -> None:
    password = "admin " + unique("pw")
    orch = Orchestrator(env, password, "psk " + password)
    # The gateway's ports as flags, which win over the env's (the control plane's).
    rest, grpc_port = free_port(), free_port()
    orch.args = ["--rest-port", str(rest), "--grpc-port", str(grpc_port)]
    gateway = f"http://127.0.0.1:{rest}"
    orch.start(wait=False)
    orch.wait_ready(check=lambda: http_ok(f"{gateway}/healthz"))
    try:
        register = httpx.post(f"{orch.control_url}/v1/nodes/register", json={"psk": "wrong"})
        assert register.status_code == 401
        resp = httpx.post(
            f"{gateway}/v1/auth/login",
            json={"handle": "admin", "password": password},
        )
        assert resp.status_code == 200
    finally:
        orch.stop()
    log = orch.running().text()
    assert orch.running().returncode == 0, log
    assert "shutting down" in log and password not in log and "psk " not in log
