"""One launcher per CLI the harness starts: `cynode-orchestrator serve`, `cynode-node run`
and `cynode-node dev-inference` (the development model). Each knows its command line,
its environment, where it logs and when it is ready; start/stop/kill9/restart are
shared. The processes are launched through their console scripts, never imported, so
the harness depends on neither the orchestrator's nor the node's code.

A launcher's env starts from `base_env`, by default this process's env without any
CYNODE_* setting, ADMIN_PASSWORD or NODE_PSK, so a developer's shell never changes what a
test runs; `make up` passes os.environ instead, where those settings are the point.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cynode.testing.ports import free_port, listening
from cynode.testing.processes import BIN, ROOT, Proc, launch
from cynode.testing.waiting import http_ok, wait_until

CONTAINERS_CONF = ROOT / "deploy" / "podman" / "containers.conf"
ORCHESTRATOR_PORTS = ("gateway_rest", "gateway_grpc", "control_rest", "control_grpc")
_PORT_ENV = {
    "gateway_rest": "CYNODE_GATEWAY_REST_PORT",
    "gateway_grpc": "CYNODE_GATEWAY_GRPC_PORT",
    "control_rest": "CYNODE_CONTROL_REST_PORT",
    "control_grpc": "CYNODE_CONTROL_GRPC_PORT",
}
_SECRETS = ("ADMIN_PASSWORD", "NODE_PSK")


def hermetic_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """`env` (default os.environ) without the settings and secrets of CyNode's processes."""
    source = os.environ if env is None else env
    return {k: v for k, v in source.items() if not k.startswith("CYNODE_") and k not in _SECRETS}


def free_ports(names: Sequence[str]) -> dict[str, int]:
    return {name: free_port() for name in names}


class Launcher:
    """What every launcher shares; subclasses say argv, env, readiness and defaults."""

    name: str
    log: Path
    prefix: Sequence[str]
    proc: Proc | None
    ready_timeout: float
    grace: float

    def argv(self) -> list[str]:
        raise NotImplementedError

    def environ(self) -> dict[str, str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def prepare(self) -> None:
        """Directories and files the process needs before it starts."""

    def start(self, wait: bool = True, timeout: float | None = None) -> Proc:
        self.prepare()
        self.proc = launch(self.name, self.argv(), self.environ(), self.log, prefix=self.prefix)
        if wait:
            self.wait_ready(timeout)
        return self.proc

    def wait_ready(
        self, timeout: float | None = None, check: Callable[[], bool] | None = None
    ) -> None:
        """Until `check` (default: this launcher's own readiness probe) holds; fails
        early, with the log's tail, when the process exits."""
        wait_until(
            check or self.ready,
            self.ready_timeout if timeout is None else timeout,
            f"{self.name} ready",
            procs=[self.running()],
        )

    def running(self) -> Proc:
        if self.proc is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.proc

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def stop(self, timeout: float | None = None) -> None:
        if self.proc is not None:
            self.proc.stop(self.grace if timeout is None else timeout)

    def kill9(self) -> None:
        self.running().kill9()

    def restart(self, wait: bool = True) -> Proc:
        """Starts it again (after a stop or kill9), logging on into the same file."""
        if self.proc is not None:
            self.proc.close()
        return self.start(wait=wait)

    def tail(self, lines: int = 40) -> str:
        return self.running().tail(lines)


@dataclass
class Orchestrator(Launcher):
    """`cynode-orchestrator serve`: SQLite in its data dir unless `database_url` says
    otherwise, the four ports free unless given; ready once the gateway's /healthz
    answers and the control plane's gRPC port listens."""

    data_dir: Path
    admin_password: str = field(repr=False)
    node_psk: str = field(repr=False)
    database_url: str = ""
    ports: dict[str, int] = field(default_factory=dict)
    # Where clients reach it; the listeners follow CYNODE_LISTEN_HOST in `settings`.
    host: str = "127.0.0.1"
    scheme: str = "http"
    settings: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    base_env: Mapping[str, str] | None = field(default=None, repr=False)
    log: Path = Path()
    name: str = "orchestrator"
    prefix: Sequence[str] = ()
    proc: Proc | None = field(default=None, repr=False)
    ready_timeout: float = 90.0
    grace: float = 20.0

    def __post_init__(self) -> None:
        missing = [name for name in ORCHESTRATOR_PORTS if name not in self.ports]
        self.ports = {**self.ports, **free_ports(missing)}
        if self.log == Path():
            self.log = self.data_dir.parent / f"{self.name}.log"

    @property
    def gateway_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.ports['gateway_rest']}"

    @property
    def gateway_grpc(self) -> str:
        return f"{self.host}:{self.ports['gateway_grpc']}"

    @property
    def control_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.ports['control_rest']}"

    @property
    def control_grpc(self) -> str:
        return f"{self.host}:{self.ports['control_grpc']}"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'cynode.db'}"

    def argv(self) -> list[str]:
        return [str(BIN / "cynode-orchestrator"), "serve", *self.args]

    def environ(self) -> dict[str, str]:
        base = hermetic_env() if self.base_env is None else dict(self.base_env)
        env = {
            **base,
            "ADMIN_PASSWORD": self.admin_password,
            "NODE_PSK": self.node_psk,
            "CYNODE_DATA_DIR": str(self.data_dir),
            "CYNODE_DATABASE_URL": self.db_url,
            "PYTHONUNBUFFERED": "1",
        }
        env.update({_PORT_ENV[name]: str(port) for name, port in self.ports.items()})
        env.update(self.settings)
        return env

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def ready(self) -> bool:
        return http_ok(f"{self.gateway_url}/healthz") and listening(
            self.host, self.ports["control_grpc"]
        )


@dataclass
class Node(Launcher):
    """`cynode-node run` against a control plane. Settings travel in the env; `config`
    (a YAML body) is written beside the state dir and passed with -c, for what the env
    cannot carry; the env wins where both say something. Ready once the worker API's
    /readyz answers 200."""

    state_dir: Path
    psk: str = field(default="", repr=False)
    control_url: str = ""
    control_grpc: str = ""
    slug: str = ""
    worker_port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    scheme: str = "http"
    # None: the config decides; "": no inference; a URL: mode existing, relaying there.
    inference_url: str | None = None
    settings: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] | None = None
    base_env: Mapping[str, str] | None = field(default=None, repr=False)
    log: Path = Path()
    name: str = "node"
    prefix: Sequence[str] = ()
    proc: Proc | None = field(default=None, repr=False)
    ready_timeout: float = 240.0
    grace: float = 60.0

    def __post_init__(self) -> None:
        if self.log == Path():
            self.log = self.state_dir.parent / f"{self.name}.log"

    @property
    def worker_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.worker_port}"

    @property
    def config_path(self) -> Path:
        return self.state_dir.parent / f"{self.name}.yaml"

    def argv(self) -> list[str]:
        argv = [str(BIN / "cynode-node"), "run"]
        return [*argv, "-c", str(self.config_path)] if self.config is not None else argv

    def environ(self) -> dict[str, str]:
        base = hermetic_env() if self.base_env is None else dict(self.base_env)
        env = {
            **base,
            "CYNODE_NODE_STATE_DIR": str(self.state_dir),
            "CYNODE_WORKER_API_PORT": str(self.worker_port),
            "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF)),
            "PYTHONUNBUFFERED": "1",
        }
        given = {
            "NODE_PSK": self.psk,
            "CYNODE_ORCHESTRATOR_URL": self.control_url,
            "CYNODE_CONTROL_PLANE_GRPC": self.control_grpc,
            "CYNODE_NODE_SLUG": self.slug,
        }
        env.update({key: value for key, value in given.items() if value})
        if self.inference_url is not None:
            env["CYNODE_INFERENCE_MODE"] = "existing" if self.inference_url else "none"
            if self.inference_url:
                env["CYNODE_INFERENCE_URL"] = self.inference_url
        env.update(self.settings)
        return env

    def prepare(self) -> None:
        self.state_dir.parent.mkdir(parents=True, exist_ok=True)
        if self.config is not None:
            self.config_path.write_text(yaml.safe_dump(self.config))

    def ready(self) -> bool:
        return http_ok(f"{self.worker_url}/readyz")


@dataclass
class DevModel(Launcher):
    """`cynode-node dev-inference`: the development model behind the Ollama API; ready
    once /api/tags answers (the model is loaded by then)."""

    log: Path
    port: int = field(default_factory=free_port)
    base_env: Mapping[str, str] | None = field(default=None, repr=False)
    name: str = "model"
    prefix: Sequence[str] = ()
    proc: Proc | None = field(default=None, repr=False)
    ready_timeout: float = 180.0
    grace: float = 30.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        return [str(BIN / "cynode-node"), "dev-inference", "--listen", f"127.0.0.1:{self.port}"]

    def environ(self) -> dict[str, str]:
        base = hermetic_env() if self.base_env is None else dict(self.base_env)
        return {**base, "PYTHONUNBUFFERED": "1"}

    def ready(self) -> bool:
        return http_ok(f"{self.url}/api/tags")
