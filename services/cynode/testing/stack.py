"""A whole local stack: the development model (unless an Ollama is named), one
orchestrator and one node, composed from the launchers, with its state under one dir:

  stack.json        pids, ports, URLs of the running stack (no secrets)
  dev-credentials   generated ADMIN_PASSWORD / NODE_PSK when the env sets none (0600)
  logs/*.log        one log per process
  orchestrator/     the orchestrator's data dir (SQLite file, JWT secret)
  node/             the node's private state dir (session, result spool)

`make up` (tools/stack.py) runs it on the default ports; the e2e, fault and security
tests run it on free ports in temp dirs.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from cynode.testing.launchers import (
    CONTAINERS_CONF,
    ORCHESTRATOR_PORTS,
    DevModel,
    Node,
    Orchestrator,
)
from cynode.testing.ports import free_port, pick_port
from cynode.testing.processes import ROOT, Proc
from cynode.testing.waiting import http_ok, wait_until

DEFAULT_DIR = ROOT / "var"
PORT_DEFAULTS = {
    "gateway_rest": 12080,
    "gateway_grpc": 12081,
    "control_rest": 12082,
    "control_grpc": 12083,
    "worker_api": 12090,
    "model": 11434,
}
PORT_ENV = {
    "gateway_rest": "CYNODE_GATEWAY_REST_PORT",
    "gateway_grpc": "CYNODE_GATEWAY_GRPC_PORT",
    "control_rest": "CYNODE_CONTROL_REST_PORT",
    "control_grpc": "CYNODE_CONTROL_GRPC_PORT",
    "worker_api": "CYNODE_WORKER_API_PORT",
    "model": "CYNODE_DEV_MODEL_PORT",
}
ORCH_TIMEOUT = 90.0


class StackError(RuntimeError):
    """The stack could not be started or reached; the message says which part."""


@dataclass
class Credentials:
    admin_password: str = field(repr=False)
    node_psk: str = field(repr=False)
    generated: bool = False


def load_credentials(state_dir: Path, env: Mapping[str, str]) -> Credentials:
    """ADMIN_PASSWORD / NODE_PSK from the env; else development defaults generated once
    into <state_dir>/dev-credentials (0600) and reused by later runs."""
    stored: dict[str, str] = {}
    path = state_dir / "dev-credentials"
    if path.is_file():
        for line in path.read_text().splitlines():
            key, _, value = line.partition("=")
            stored[key.strip()] = value.strip()
    generated = False
    values: dict[str, str] = {}
    for key in ("ADMIN_PASSWORD", "NODE_PSK"):
        if env.get(key):
            values[key] = env[key]
        elif stored.get(key):
            values[key] = stored[key]
        else:
            values[key] = f"dev-{secrets.token_urlsafe(12)}"
            stored[key] = values[key]
            generated = True
    if generated:
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.writelines(f"{key}={value}\n" for key, value in stored.items())
    return Credentials(values["ADMIN_PASSWORD"], values["NODE_PSK"], generated)


@dataclass
class StackSettings:
    state_dir: Path = DEFAULT_DIR
    database_url: str = ""
    ports: dict[str, int] = field(default_factory=dict)
    # http URL of an Ollama to use; empty: start the development model backend.
    inference_url: str = ""
    # False: a sandbox-only node (no model, prompt tasks cannot run).
    inference: bool = True
    lease_seconds: int | None = None
    heartbeat_seconds: int | None = None
    node_slug: str = "local-node"
    orchestrator_env: dict[str, str] = field(default_factory=dict)
    node_env: dict[str, str] = field(default_factory=dict)
    # YAML for `cynode-node run -c` (settings the env cannot carry, e.g. reconnect).
    node_yaml: str = ""
    # True: the processes see this process's CYNODE_* settings (`make up`); False: a
    # test's stack depends on nothing in the caller's env.
    inherit_env: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str], state_dir: Path | None = None) -> StackSettings:
        """`make up` settings: the SPEC's env names and default ports (a taken model port
        is replaced by a free one; the others must be free)."""
        ports = dict(PORT_DEFAULTS)
        for key, name in PORT_ENV.items():
            if env.get(name):
                ports[key] = int(env[name])
        inference_url = env.get("CYNODE_INFERENCE_URL", "") or env.get("OLLAMA_URL", "")
        return cls(
            state_dir=state_dir or Path(env.get("CYNODE_STACK_DIR") or DEFAULT_DIR),
            database_url=env.get("CYNODE_DATABASE_URL", ""),
            ports=ports,
            inference_url=inference_url,
            inference=env.get("CYNODE_INFERENCE_MODE", "existing") != "none",
            inherit_env=True,
        )

    @classmethod
    def free(cls, state_dir: Path, **kwargs: object) -> StackSettings:
        """Settings on free ports, for tests that run beside other stacks."""
        ports = {name: free_port() for name in PORT_DEFAULTS}
        return cls(state_dir=state_dir, ports=ports, **kwargs)  # type: ignore[arg-type]


class Stack:
    """The processes of one stack. `start()` brings them up and waits for /readyz."""

    def __init__(self, settings: StackSettings, say: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.dir = settings.state_dir.resolve()
        self.logs = self.dir / "logs"
        self.creds = load_credentials(self.dir, os.environ)
        self.ports = {**PORT_DEFAULTS, **settings.ports}
        self.say = say or (lambda _msg: None)
        base = dict(os.environ) if settings.inherit_env else None
        self.model = DevModel(self.logs / "model.log", self.ports["model"], base_env=base)
        self.orchestrator = Orchestrator(
            self.dir / "orchestrator",
            self.creds.admin_password,
            self.creds.node_psk,
            database_url=settings.database_url,
            ports={name: self.ports[name] for name in ORCHESTRATOR_PORTS},
            settings=self._orchestrator_settings(),
            base_env=base,
            log=self.logs / "orchestrator.log",
            ready_timeout=ORCH_TIMEOUT,
        )
        self.node = Node(
            self.node_state_dir,
            self.creds.node_psk,
            control_url=self.control_url,
            control_grpc=self.control_grpc,
            slug=settings.node_slug,
            worker_port=self.ports["worker_api"],
            inference_url=self.model_url if settings.inference else "",
            settings=dict(settings.node_env),
            config=yaml.safe_load(settings.node_yaml) if settings.node_yaml else None,
            base_env=base,
            log=self.logs / "node.log",
        )

    def _orchestrator_settings(self) -> dict[str, str]:
        settings = self.settings
        env = {"CYNODE_REQUIRE_INFERENCE": "true" if settings.inference else "false"}
        if settings.lease_seconds is not None:
            env["CYNODE_LEASE_SECONDS"] = str(settings.lease_seconds)
        if settings.heartbeat_seconds is not None:
            env["CYNODE_HEARTBEAT_SECONDS"] = str(settings.heartbeat_seconds)
        return {**env, **settings.orchestrator_env}

    # URLs -------------------------------------------------------------------------
    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway_rest']}"

    @property
    def gateway_grpc(self) -> str:
        return f"127.0.0.1:{self.ports['gateway_grpc']}"

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['control_rest']}"

    @property
    def control_grpc(self) -> str:
        return f"127.0.0.1:{self.ports['control_grpc']}"

    @property
    def worker_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['worker_api']}"

    @property
    def model_url(self) -> str:
        return self.settings.inference_url or f"http://127.0.0.1:{self.ports['model']}"

    @property
    def database_url(self) -> str:
        return self.orchestrator.db_url

    @property
    def node_state_dir(self) -> Path:
        return self.dir / "node"

    def node_id(self) -> str:
        try:
            body = json.loads((self.node_state_dir / "session.json").read_text())
        except (OSError, ValueError):
            return ""
        return str(body.get("node_id", ""))

    @property
    def procs(self) -> dict[str, Proc]:
        """The processes started so far, by name: model, orchestrator, node."""
        launchers = (self.model, self.orchestrator, self.node)
        return {lau.name: lau.proc for lau in launchers if lau.proc is not None}

    def orchestrator_env(self) -> dict[str, str]:
        """The env the orchestrator runs with (for its other subcommands)."""
        return self.orchestrator.environ()

    # processes --------------------------------------------------------------------
    def start_model(self) -> None:
        if not self.settings.inference or self.settings.inference_url:
            return
        self.ports["model"] = self.model.port = pick_port(self.ports["model"])
        self.node.inference_url = self.model_url
        listen = f"127.0.0.1:{self.model.port}"
        self.say(f"starting the development model (SmolLM2-135M) on {listen} ...")
        self.model.start()

    def start_orchestrator(self, wait: bool = True) -> Proc:
        self.say(f"starting the orchestrator on {self.gateway_url} ...")
        return self.orchestrator.start(wait=wait)

    def wait_healthy(self, timeout: float = ORCH_TIMEOUT) -> None:
        self.orchestrator.wait_ready(timeout)

    def start_node(self, wait: bool = True) -> Proc:
        self.say("starting the node (Podman service, images, registration) ...")
        return self.node.start(wait=wait)

    def wait_ready(self, timeout: float = ORCH_TIMEOUT) -> None:
        """Both /readyz answer 200 `ready`."""
        wait_until(
            lambda: http_ok(f"{self.gateway_url}/readyz") and http_ok(f"{self.worker_url}/readyz"),
            timeout,
            "both /readyz",
            procs=[p for n, p in self.procs.items() if n in ("orchestrator", "node")],
        )

    def start(self) -> None:
        self.start_model()
        self.start_orchestrator()
        self.start_node()
        self.wait_ready()
        self.save()

    def restart_orchestrator(self) -> Proc:
        return self.orchestrator.restart()

    def restart_node(self, wait: bool = True) -> Proc:
        return self.node.restart(wait=wait)

    def stop(self) -> None:
        for launcher in (self.node, self.orchestrator, self.model):
            launcher.stop(20.0)
        remove_containers(self.node_id())
        kill_strays(self.node_state_dir)

    def log_files(self) -> list[Path]:
        return sorted(self.logs.glob("*.log")) if self.logs.is_dir() else []

    # the state file ---------------------------------------------------------------
    def save(self) -> None:
        body = {
            "procs": {n: {"pid": p.pid, "log": str(p.log)} for n, p in self.procs.items()},
            "ports": self.ports,
            "gateway_url": self.gateway_url,
            "database_url_kind": self.database_url.split(":", 1)[0],
            "settings": {k: str(v) for k, v in asdict(self.settings).items() if k != "ports"},
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "stack.json").write_text(json.dumps(body, indent=2) + "\n")


@contextlib.contextmanager
def running_stack(settings: StackSettings) -> Iterator[Stack]:
    """A started stack for a block of tests, stopped after it. Its state dir is removed
    when the block ended well and kept (its logs named on stdout) when it did not."""
    stack = Stack(settings)
    ok = False
    try:
        stack.start()
        yield stack
        ok = True
    finally:
        stack.stop()
        if ok:
            shutil.rmtree(settings.state_dir, ignore_errors=True)
        else:
            print(f"\nstack logs kept in {settings.state_dir}/logs")


def running_state(state_dir: Path) -> dict[str, object] | None:
    """What the last `save()` in that dir wrote, if anything."""
    try:
        body: dict[str, object] = json.loads((state_dir / "stack.json").read_text())
    except (OSError, ValueError):
        return None
    return body


def remove_containers(node_id: str) -> int:
    """Removes the pods, containers and volumes one node created (by its node-id label)
    with the node's own start-up cleanup, on a Podman service of its own: the node's
    went with it. How many it removed."""
    if not node_id:
        return 0
    # Here, not at the top: podman-py is loaded only by a stop that has a node's
    # leftovers to remove.
    from cynode.node.runtime import PodmanService
    from cynode.node.runtime.cleanup import remove_leftovers_sync

    conf = Path(os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF)))
    # Under /tmp: the service's socket path must stay short.
    with tempfile.TemporaryDirectory(prefix="cyn-clean-", dir="/tmp") as runtime_dir:
        service = PodmanService(Path(runtime_dir), containers_conf=conf)
        service.start()
        try:
            with service.client() as client:
                return remove_leftovers_sync(client, node_id).total
        finally:
            service.stop()


def kill_strays(state_dir: Path) -> int:
    """Ends processes a killed node left behind (its `podman system service`, whose
    socket lives under the node's state dir); found by that path in their argv."""
    needle = str(state_dir).encode()
    killed = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in argv and b"podman" in argv:
            # SIGKILL: a service whose node died can wait forever on the dead node's
            # open log streams in a graceful shutdown.
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
    return killed


def iter_secrets(stack: Stack) -> Iterator[str]:
    """The secrets of a stack, for log scans."""
    yield stack.creds.admin_password
    yield stack.creds.node_psk
    jwt = stack.dir / "orchestrator" / "jwt_secret"
    if jwt.is_file():
        yield jwt.read_text().strip()
    with contextlib.suppress(OSError, ValueError, KeyError):
        yield str(json.loads((stack.node_state_dir / "session.json").read_text())["node_jwt"])
