"""Fixtures for cynork: a fake gateway at the HTTP boundary and an isolated config dir."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from cynork._app import Seams
from cynork.cli import cli
from tests.cynork.fake_gateway import FakeGateway


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for name in ("CYNORK_GATEWAY_URL", "CYNORK_TOKEN", "CYNODE_CA_FILE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "xdg" / "cynork"


@pytest.fixture
def gw() -> FakeGateway:
    return FakeGateway()


@dataclass
class Cy:
    """Runs `cynork ARGS` in process against the fake gateway."""

    gw: FakeGateway
    config_dir: Path
    environ: dict[str, str] = field(default_factory=dict)
    sleeps: list[float] = field(default_factory=list)
    seams: Seams = field(init=False)

    def __post_init__(self) -> None:
        self.seams = Seams(
            transport=self.gw.transport(),
            sleep=self.sleeps.append,
            environ=self.environ,
            stderr_tty=False,
            stdout_tty=False,
            stdin_tty=False,
        )

    def __call__(self, *args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(cli, list(args), obj=self.seams, input=input)

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.yaml"

    def config(self) -> dict[str, str]:
        data = yaml.safe_load(self.config_file.read_text())
        assert isinstance(data, dict)
        return data

    def login(self) -> None:
        result = self("auth", "login", "-u", "admin", "--password-stdin", input="s3cret\n")
        assert result.exit_code == 0, result.output
        self.gw.requests.clear()
        self.gw.bodies.clear()


@pytest.fixture
def cy(gw: FakeGateway, config_dir: Path) -> Cy:
    return Cy(gw, config_dir)


def lines(text: str) -> Sequence[str]:
    return [line for line in text.splitlines() if line]
