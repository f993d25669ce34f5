"""The one harness for starting CyNode's processes in tests, behave suites, benches and
`make up`: free ports (ports), polling with deadlines (waiting), processes with log
files (processes), one launcher per CLI (launchers), a Postgres schema per run
(postgres) and a whole local stack (stack).

It launches the orchestrator and the node through their console scripts and imports
neither, so it may live beside the orchestrator without breaking the rule that the
orchestrator never depends on the node.
"""

from cynode.testing.launchers import DevModel, Node, Orchestrator, hermetic_env
from cynode.testing.ports import free_port, listening, pick_port, port_free
from cynode.testing.postgres import PG_DSN, PgSchema, pg_execute
from cynode.testing.processes import BIN, ROOT, Proc, launch, pid_alive
from cynode.testing.stack import (
    Credentials,
    Stack,
    StackError,
    StackSettings,
    iter_secrets,
    kill_strays,
    load_credentials,
    remove_containers,
    running_stack,
    running_state,
)
from cynode.testing.waiting import NotReady, ProcessExited, http_ok, http_status, until, wait_until

__all__ = [
    "BIN",
    "PG_DSN",
    "ROOT",
    "Credentials",
    "DevModel",
    "Node",
    "NotReady",
    "Orchestrator",
    "PgSchema",
    "Proc",
    "ProcessExited",
    "Stack",
    "StackError",
    "StackSettings",
    "free_port",
    "hermetic_env",
    "http_ok",
    "http_status",
    "iter_secrets",
    "kill_strays",
    "launch",
    "listening",
    "load_credentials",
    "pg_execute",
    "pick_port",
    "pid_alive",
    "port_free",
    "remove_containers",
    "running_stack",
    "running_state",
    "until",
    "wait_until",
]
