"""`make up` / `make down` / `make logs` / `make demo`: a thin command line over the
harness's Stack (cynode.testing.stack), which also says what lives in the state dir
(./var by default, CYNODE_STACK_DIR overrides)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from cynode.testing import (
    BIN,
    NotReady,
    Proc,
    ProcessExited,
    Stack,
    StackError,
    StackSettings,
    kill_strays,
    pid_alive,
    port_free,
    remove_containers,
    running_state,
)
from cynode.testing import stack as harness_stack
from cynode.testing.stack import DEFAULT_DIR

FAILURES = (StackError, NotReady, ProcessExited)


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
    except FAILURES as exc:
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
                proc = Proc(name, int(procs[name]["pid"]), Path(procs[name]["log"]))
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
    _print(f"stopped {stopped} process(es), removed {removed} of its pods, containers and volumes")
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
    chatted = True
    if settings.inference:
        chatted = _demo_chat(env)
    _print(
        f"\n{completed}/3 tasks completed. "
        "Try: .venv/bin/cynork task list, .venv/bin/cynork chat, or .venv/bin/cynork shell"
    )
    _print("The stack is still up. Stop it with: make down   (logs: make logs)")
    return 0 if completed == 3 and chatted else 1


def _demo_chat(env: Mapping[str, str]) -> bool:
    """A chat answer through the gateway's OpenAI door (SPEC §10), with cynork."""
    _print("\n== chat through the gateway (cynork chat -m ...)")
    deadline = time.monotonic() + 60
    while "model=" not in (listed := _cynork("models", "list", env=env)):
        if time.monotonic() > deadline:
            _print("no model reached the gateway within 60 s (cynork models list is empty)")
            return False
        time.sleep(0.5)
    _print(listed.rstrip())
    _print(
        _cynork("chat", "--plain", "-m", "In one sentence: what is a lighthouse?", env=env).rstrip()
    )
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=f"{__doc__}\n\n{harness_stack.__doc__}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    except FAILURES as exc:
        _print(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
