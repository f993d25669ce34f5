"""A local CyNode stack: orchestrator, one node, and the development model backend.

`make up` / `make down` / `make logs` / `make demo` call this file; the e2e suite and
the fault and security tests import `Stack` to run the same processes on free ports.

State lives under one directory (./var by default, CYNODE_STACK_DIR overrides):
  stack.json        pids, ports, URLs of the running stack (no secrets)
  dev-credentials   generated ADMIN_PASSWORD / NODE_PSK when the env sets none (0600)
  logs/*.log        one log per process (`make logs` tails them)
  orchestrator/     the orchestrator's data dir (SQLite file, JWT secret)
  node/             the node's private state dir (session, result spool)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

import httpx

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
CONTAINERS_CONF = ROOT / "deploy" / "podman" / "containers.conf"
DEFAULT_DIR = ROOT / "var"
PORT_DEFAULTS = {
    "gateway_rest": 12080,
    "gateway_grpc": 12081,
    "control_rest": 12082,
    "control_grpc": 12083,
    "worker_api": 12090,
    "model": 11434,
}
ORCH_TIMEOUT = 90.0
NODE_TIMEOUT = 240.0
MODEL_TIMEOUT = 180.0


class StackError(RuntimeError):
    """The stack could not be started or reached; the message says which part."""


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pick_port(preferred: int) -> int:
    """The preferred port when nothing listens there, else a free one."""
    return preferred if port_free(preferred) else free_port()


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); /proc says whether it is one.
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0] != "Z"
    return True


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
class Proc:
    name: str
    pid: int
    log: str
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)
    handle: IO[bytes] | None = field(default=None, repr=False, compare=False)

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return pid_alive(self.pid)

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to the process group, SIGKILL after `timeout`."""
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.alive():
            self.signal(signal.SIGKILL)
            self.wait(10.0)
        self.close()

    def kill9(self) -> None:
        """kill -9 of the main process only (its children, e.g. Podman, live on)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.wait(10.0)

    def wait(self, timeout: float) -> None:
        if self.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
            return
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.1)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


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

    @classmethod
    def from_env(cls, env: Mapping[str, str], state_dir: Path | None = None) -> StackSettings:
        """`make up` settings: the SPEC's env names and default ports (a taken model port
        is replaced by a free one; the others must be free)."""
        ports = dict(PORT_DEFAULTS)
        for key, name in (
            ("gateway_rest", "CYNODE_GATEWAY_REST_PORT"),
            ("gateway_grpc", "CYNODE_GATEWAY_GRPC_PORT"),
            ("control_rest", "CYNODE_CONTROL_REST_PORT"),
            ("control_grpc", "CYNODE_CONTROL_GRPC_PORT"),
            ("worker_api", "CYNODE_WORKER_API_PORT"),
            ("model", "CYNODE_DEV_MODEL_PORT"),
        ):
            if env.get(name):
                ports[key] = int(env[name])
        inference_url = env.get("CYNODE_INFERENCE_URL", "") or env.get("OLLAMA_URL", "")
        return cls(
            state_dir=state_dir or Path(env.get("CYNODE_STACK_DIR") or DEFAULT_DIR),
            database_url=env.get("CYNODE_DATABASE_URL", ""),
            ports=ports,
            inference_url=inference_url,
            inference=env.get("CYNODE_INFERENCE_MODE", "existing") != "none",
        )

    @classmethod
    def free(cls, state_dir: Path, **kwargs: object) -> StackSettings:
        """Settings on free ports, for tests that run beside other stacks."""
        ports = {name: free_port() for name in PORT_DEFAULTS}
        return cls(state_dir=state_dir, ports=ports, **kwargs)  # type: ignore[arg-type]


def _wait_until(
    what: str, check: Callable[[], bool], procs: list[Proc], timeout: float, log: str
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if not proc.alive():
                raise StackError(
                    f"{proc.name} exited while waiting for {what}:\n{tail(Path(proc.log))}"
                )
        if check():
            return
        time.sleep(0.25)
    raise StackError(f"{what} not reached within {timeout:.0f}s:\n{tail(Path(log))}")


def http_status(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        resp = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        return 0, str(exc)
    return resp.status_code, resp.text.strip()


class Stack:
    """The processes of one stack. `start()` brings them up and waits for /readyz."""

    def __init__(self, settings: StackSettings, say: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.dir = settings.state_dir.resolve()
        self.logs = self.dir / "logs"
        self.creds = load_credentials(self.dir, os.environ)
        self.ports = {**PORT_DEFAULTS, **settings.ports}
        self.procs: dict[str, Proc] = {}
        self.say = say or (lambda _msg: None)

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
        return self.settings.database_url or f"sqlite:///{self.dir / 'orchestrator' / 'cynode.db'}"

    @property
    def node_state_dir(self) -> Path:
        return self.dir / "node"

    def node_id(self) -> str:
        try:
            body = json.loads((self.node_state_dir / "session.json").read_text())
        except (OSError, ValueError):
            return ""
        return str(body.get("node_id", ""))

    # processes --------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        handle = log.open("ab")
        popen = subprocess.Popen(
            argv,
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        proc = Proc(name, popen.pid, str(log), popen, handle)
        self.procs[name] = proc
        return proc

    def orchestrator_env(self) -> dict[str, str]:
        settings = self.settings
        env = {
            **os.environ,
            "ADMIN_PASSWORD": self.creds.admin_password,
            "NODE_PSK": self.creds.node_psk,
            "CYNODE_DATA_DIR": str(self.dir / "orchestrator"),
            "CYNODE_DATABASE_URL": self.database_url,
            "CYNODE_GATEWAY_REST_PORT": str(self.ports["gateway_rest"]),
            "CYNODE_GATEWAY_GRPC_PORT": str(self.ports["gateway_grpc"]),
            "CYNODE_CONTROL_REST_PORT": str(self.ports["control_rest"]),
            "CYNODE_CONTROL_GRPC_PORT": str(self.ports["control_grpc"]),
            "CYNODE_REQUIRE_INFERENCE": "true" if settings.inference else "false",
            "PYTHONUNBUFFERED": "1",
        }
        if settings.lease_seconds is not None:
            env["CYNODE_LEASE_SECONDS"] = str(settings.lease_seconds)
        if settings.heartbeat_seconds is not None:
            env["CYNODE_HEARTBEAT_SECONDS"] = str(settings.heartbeat_seconds)
        env.update(settings.orchestrator_env)
        return env

    def node_env(self) -> dict[str, str]:
        settings = self.settings
        env = {
            **os.environ,
            "NODE_PSK": self.creds.node_psk,
            "CYNODE_ORCHESTRATOR_URL": self.control_url,
            "CYNODE_CONTROL_PLANE_GRPC": self.control_grpc,
            "CYNODE_NODE_SLUG": settings.node_slug,
            "CYNODE_NODE_STATE_DIR": str(self.node_state_dir),
            "CYNODE_WORKER_API_PORT": str(self.ports["worker_api"]),
            "CYNODE_INFERENCE_MODE": "existing" if settings.inference else "none",
            "CYNODE_INFERENCE_URL": self.model_url,
            "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF)),
            "PYTHONUNBUFFERED": "1",
        }
        env.update(settings.node_env)
        return env

    def start_model(self) -> None:
        if not self.settings.inference or self.settings.inference_url:
            return
        self.ports["model"] = pick_port(self.ports["model"])
        listen = f"127.0.0.1:{self.ports['model']}"
        self.say(f"starting the development model (SmolLM2-135M) on {listen} ...")
        proc = self._spawn(
            "model",
            [str(BIN / "cynode-node"), "dev-inference", "--listen", listen],
            {**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        _wait_until(
            "the model's /api/tags",
            lambda: http_status(f"{self.model_url}/api/tags")[0] == 200,
            [proc],
            MODEL_TIMEOUT,
            proc.log,
        )

    def start_orchestrator(self, wait: bool = True) -> Proc:
        (self.dir / "orchestrator").mkdir(parents=True, exist_ok=True)
        self.say(f"starting the orchestrator on {self.gateway_url} ...")
        proc = self._spawn(
            "orchestrator",
            [str(BIN / "cynode-orchestrator"), "serve"],
            self.orchestrator_env(),
        )
        if wait:
            self.wait_healthy()
        return proc

    def wait_healthy(self, timeout: float = ORCH_TIMEOUT) -> None:
        proc = self.procs["orchestrator"]
        _wait_until(
            "the orchestrator's /healthz",
            lambda: http_status(f"{self.gateway_url}/healthz")[0] == 200,
            [proc],
            timeout,
            proc.log,
        )

    def start_node(self, wait: bool = True) -> Proc:
        self.say("starting the node (Podman service, images, registration) ...")
        argv = [str(BIN / "cynode-node"), "run"]
        if self.settings.node_yaml:
            config = self.dir / "node.yaml"
            config.write_text(self.settings.node_yaml)
            argv += ["-c", str(config)]
        proc = self._spawn("node", argv, self.node_env())
        if wait:
            _wait_until(
                "the node's /readyz",
                lambda: http_status(f"{self.worker_url}/readyz")[0] == 200,
                [proc],
                NODE_TIMEOUT,
                proc.log,
            )
        return proc

    def wait_ready(self, timeout: float = ORCH_TIMEOUT) -> None:
        """Both /readyz answer 200 `ready`."""
        procs = [p for n, p in self.procs.items() if n in ("orchestrator", "node")]

        def ready() -> bool:
            return (
                http_status(f"{self.gateway_url}/readyz")[0] == 200
                and http_status(f"{self.worker_url}/readyz")[0] == 200
            )

        _wait_until("both /readyz", ready, procs, timeout, self.procs["orchestrator"].log)

    def start(self) -> None:
        self.start_model()
        self.start_orchestrator()
        self.start_node()
        self.wait_ready()
        self.save()

    def restart_orchestrator(self) -> Proc:
        old = self.procs.get("orchestrator")
        if old is not None:
            old.close()
        return self.start_orchestrator()

    def restart_node(self, wait: bool = True) -> Proc:
        old = self.procs.get("node")
        if old is not None:
            old.close()
        return self.start_node(wait=wait)

    def stop(self) -> None:
        for name in ("node", "orchestrator", "model"):
            proc = self.procs.pop(name, None)
            if proc is not None:
                proc.stop()
        remove_containers(self.node_id())
        kill_strays(self.node_state_dir)

    def log_files(self) -> list[Path]:
        return sorted(self.logs.glob("*.log")) if self.logs.is_dir() else []

    # the state file ---------------------------------------------------------------
    def save(self) -> None:
        body = {
            "procs": {n: {"pid": p.pid, "log": p.log} for n, p in self.procs.items()},
            "ports": self.ports,
            "gateway_url": self.gateway_url,
            "database_url_kind": self.database_url.split(":", 1)[0],
            "settings": {k: str(v) for k, v in asdict(self.settings).items() if k != "ports"},
        }
        (self.dir / "stack.json").write_text(json.dumps(body, indent=2) + "\n")


def remove_containers(node_id: str) -> int:
    """Removes the pods and containers one node created (by its node-id label)."""
    if not node_id:
        return 0
    env = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF))}
    removed = 0
    label = f"label=cynode.node_id={node_id}"
    for kind in ("pod", "container"):
        listed = subprocess.run(
            ["podman", kind, "ps", "-a", "-q", "--filter", label],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        ids = listed.stdout.split()
        if ids:
            subprocess.run(
                ["podman", kind, "rm", "-f", "-t", "2", *ids],
                env=env,
                capture_output=True,
                check=False,
            )
            removed += len(ids)
    return removed


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


def running_state(state_dir: Path) -> dict[str, object] | None:
    try:
        body: dict[str, object] = json.loads((state_dir / "stack.json").read_text())
    except (OSError, ValueError):
        return None
    return body


# commands -------------------------------------------------------------------------
def _print(msg: str) -> None:
    print(msg, flush=True)


def _live_pids(state: Mapping[str, object]) -> dict[str, int]:
    procs = state.get("procs", {})
    assert isinstance(procs, dict)
    return {n: int(p["pid"]) for n, p in procs.items() if pid_alive(int(p["pid"]))}


def cmd_up(args: argparse.Namespace) -> int:
    settings = StackSettings.from_env(os.environ, args.dir)
    state = running_state(settings.state_dir)
    if state and _live_pids(state):
        _print(f"the stack is already up ({settings.state_dir}/stack.json); `make down` stops it")
        return 0
    for key in ("gateway_rest", "gateway_grpc", "control_rest", "control_grpc", "worker_api"):
        port = settings.ports[key]
        if not port_free(port):
            _print(f"port {port} ({key}) is taken; free it or set its CYNODE_*_PORT variable")
            return 1
    stack = Stack(settings, say=_print)
    if stack.creds.generated:
        _print("development credentials (set ADMIN_PASSWORD / NODE_PSK to choose your own):")
        _print(f"  ADMIN_PASSWORD={stack.creds.admin_password}")
        _print(f"  NODE_PSK={stack.creds.node_psk}")
        _print(f"  (kept in {stack.dir}/dev-credentials, mode 0600)")
    try:
        stack.start()
    except StackError as exc:
        _print(f"make up failed: {exc}")
        stack.save()
        stack.stop()
        return 1
    # The processes are in their own sessions; they outlive this command.
    for proc in stack.procs.values():
        proc.close()
    db_kind = "Postgres" if stack.database_url.startswith("postgres") else "SQLite"
    _print("")
    _print("CyNode is up (both /readyz say ready):")
    _print(f"  user gateway     REST {stack.gateway_url}   gRPC {stack.gateway_grpc}")
    _print(f"  control plane    REST {stack.control_url}   gRPC {stack.control_grpc}")
    _print(f"  node worker API  {stack.worker_url}")
    _print(f"  model            {stack.model_url}")
    _print(f"  database         {db_kind}")
    _print(f"  logs             {stack.logs}/*.log  (`make logs`)")
    _print(
        "next: .venv/bin/cynork auth login -u admin && "
        ".venv/bin/cynork task create -p 'Say hello' --result"
    )
    _print("stop: make down")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    state_dir: Path = args.dir or Path(os.environ.get("CYNODE_STACK_DIR") or DEFAULT_DIR)
    state = running_state(state_dir)
    stopped = 0
    if state:
        procs = state.get("procs", {})
        assert isinstance(procs, dict)
        for name in ("node", "orchestrator", "model"):
            if name in procs:
                proc = Proc(name, int(procs[name]["pid"]), str(procs[name]["log"]))
                if proc.alive():
                    proc.stop()
                    stopped += 1
    node_id = ""
    with contextlib.suppress(OSError, ValueError):
        node_id = json.loads((state_dir / "node" / "session.json").read_text())["node_id"]
    removed = remove_containers(node_id)
    kill_strays((state_dir / "node").resolve())
    with contextlib.suppress(FileNotFoundError):
        (state_dir / "stack.json").unlink()
    _print(f"stopped {stopped} process(es), removed {removed} pod(s)/container(s)")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    state_dir: Path = args.dir or Path(os.environ.get("CYNODE_STACK_DIR") or DEFAULT_DIR)
    logs = sorted((state_dir / "logs").glob("*.log"))
    if not logs:
        _print(f"no logs under {state_dir}/logs (run `make up`)")
        return 1
    argv = ["tail", "-n", "50", *(["-F"] if args.follow else []), *map(str, logs)]
    with contextlib.suppress(KeyboardInterrupt):
        return subprocess.call(argv)
    return 0


def _cynork(*argv: str, stdin: str | None = None, env: Mapping[str, str]) -> str:
    cmd = [str(BIN / "cynork"), *argv]
    done = subprocess.run(
        cmd, input=stdin, capture_output=True, text=True, env=dict(env), check=False
    )
    if done.returncode != 0:
        raise StackError(
            f"cynork {' '.join(argv[:3])} failed ({done.returncode}): {done.stderr.strip()}"
        )
    return done.stdout


DEMO_SCRIPT = """#!/bin/sh
# A script task: runs as given, in the sandbox (no network, non-root).
echo "script running as uid $(id -u) in $(pwd)"
printf 'files in /workspace: '; ls /workspace | wc -l
python3 -c 'import platform; print("python", platform.python_version())'
"""


def cmd_demo(args: argparse.Namespace) -> int:
    if cmd_up(args) != 0:
        return 1
    settings = StackSettings.from_env(os.environ, args.dir)
    stack = Stack(settings)
    state = running_state(stack.dir) or {}
    ports = state.get("ports")
    if isinstance(ports, dict):
        stack.ports.update({k: int(v) for k, v in ports.items()})
    env = {**os.environ, "CYNORK_GATEWAY_URL": stack.gateway_url}
    _print("\n== logging in as admin (cynork auth login)")
    _print(
        _cynork(
            "auth",
            "login",
            "-u",
            "admin",
            "--password-stdin",
            stdin=stack.creds.admin_password + "\n",
            env=env,
        ).strip()
    )
    script = stack.dir / "demo-script.sh"
    script.write_text(DEMO_SCRIPT)
    tasks = [
        ("a command", ["--command", "echo hello from the sandbox; uname -sm; id -u"]),
        ("a script", ["-s", str(script)]),
        (
            "a prompt, answered by the model from inside the sandbox",
            ["-p", "In one sentence: what is a sandbox?"],
        ),
    ]
    ids: list[str] = []
    for label, argv in tasks:
        _print(f"\n== task: {label} (cynork task create ... --result)")
        out = _cynork("task", "create", *argv, "--result", "-o", "json", env=env)
        body = json.loads(out)
        ids.append(str(body["task_id"]))
        _print(f"task_id={body['task_id']} status={body['status']}")
        _print(str(body.get("stdout", "")).rstrip() or "(no stdout)")
    _print("\n== the three tasks (cynork task list)")
    _print(_cynork("task", "list", "-l", "3", env=env).rstrip())
    completed = 0
    for task_id in ids:
        body = json.loads(_cynork("task", "result", task_id, "-o", "json", env=env))
        completed += body["status"] == "completed"
    _print(
        f"\n{completed}/3 tasks completed. "
        "Try: .venv/bin/cynork task list, or .venv/bin/cynork shell"
    )
    _print("The stack is still up. Stop it with: make down   (logs: make logs)")
    return 0 if completed == 3 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dir", type=Path, default=None, help="state dir (./var; CYNODE_STACK_DIR)"
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("up", help="start the stack in the background")
    sub.add_parser("down", help="stop it and remove its pods and containers")
    logs = sub.add_parser("logs", help="tail the logs")
    logs.add_argument("--no-follow", dest="follow", action="store_false")
    sub.add_parser("demo", help="up, log in, run three tasks")
    args = parser.parse_args(argv)
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "up": cmd_up,
        "down": cmd_down,
        "logs": cmd_logs,
        "demo": cmd_demo,
    }
    try:
        return commands[args.cmd](args)
    except StackError as exc:
        _print(f"error: {exc}")
        return 1


def iter_secrets(stack: Stack) -> Iterator[str]:
    """The secrets of a stack, for log scans."""
    yield stack.creds.admin_password
    yield stack.creds.node_psk
    jwt = stack.dir / "orchestrator" / "jwt_secret"
    if jwt.is_file():
        yield jwt.read_text().strip()
    with contextlib.suppress(OSError, ValueError, KeyError):
        yield str(json.loads((stack.node_state_dir / "session.json").read_text())["node_jwt"])


if __name__ == "__main__":
    sys.exit(main())
