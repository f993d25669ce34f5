"""Every write of a task's or a job's status or lease lives in cynode.orchestrator.lifecycle:
the rest of the orchestrator asks it. This scans the package's source for writes
elsewhere, and for status words spelled out instead of taken from its vocabulary."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import cynode.orchestrator
from cynode.jobs.v1 import job_pb2
from cynode.orchestrator.lifecycle import AttemptStatus, Status
from tests.sourcescan import parse_source

ROOT = Path(cynode.orchestrator.__file__).parent
# The tables' own definitions and their migrations name the columns; they write nothing.
OUTSIDE = ("lifecycle/", "store/models.py", "store/migrations/")
WRITTEN = {"status", "lease_expires_at"}
# Rows of these tables are the lifecycle's; a node's own status (online/offline) is not.
LIFECYCLE_TABLES = ("JOBS", "TASKS", "ATTEMPTS", "(Task)", "(Job)", "(JobAttempt)")
WORDS = {s.value for s in Status} | {s.value for s in AttemptStatus}


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def violations(source: str, name: str = "<src>") -> list[str]:
    """Status or lease writes, and bare status words, in `source`."""
    tree = parse_source(source)
    docs = _docstrings(tree)
    found: list[str] = []
    for node in ast.walk(tree):
        where = f"{name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            keys = {str(k.arg) for k in node.keywords} | {
                str(k.value)
                for a in node.args
                if isinstance(a, ast.Dict)
                for k in a.keys
                if isinstance(k, ast.Constant)
            }
            row = func in ("Task", "Job", "JobAttempt")
            update = func.endswith(".values") and any(t in func for t in LIFECYCLE_TABLES)
            if (row or update) and keys & WRITTEN:
                found.append(f"{where}: {func}({', '.join(sorted(keys & WRITTEN))}=...)")
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for t in ast.walk(target):
                    if (
                        isinstance(t, ast.Attribute)
                        and t.attr in WRITTEN
                        and "node" not in ast.unparse(t.value).lower()
                    ):
                        found.append(f"{where}: {ast.unparse(t)} = ...")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value in ("b_status", "b_lease"):
                found.append(f"{where}: batched bind {node.value!r}")
            elif node.value in WORDS and id(node) not in docs:
                found.append(f"{where}: status word {node.value!r} spelled out")
    return found


def _sources() -> list[Path]:
    return [
        p
        for p in sorted(ROOT.rglob("*.py"))
        if not any(p.relative_to(ROOT).as_posix().startswith(o) for o in OUTSIDE)
    ]


# Not a task's or a job's status: a node config's ack (`applied` / `failed`), and the
# status an exception reports (TaskTerminal: the task had already ended as ...).
ALLOWED = {
    ("controlplane/nodes.py", "status word 'failed' spelled out"),
    ("gateway/tasks.py", "self.status = ..."),
}


def test_no_status_write_or_word_outside_the_lifecycle() -> None:
    found = []
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        for v in violations(path.read_text(), rel):
            if (rel, v.split(": ", 1)[1]) not in ALLOWED:
                found.append(v)
    assert not found, "status writes outside cynode.orchestrator.lifecycle:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "snippet",
    [
        "JOBS.update().where(x).values(status='x')",
        "TASKS.update().values(lease_expires_at=now)",
        "update(Task).values(status=s)",
        "Job(task_id=t, status=s)",
        "job.status = s",
        "rows.append({'b_status': s})",
        "if s == 'queued': pass",
    ],
)
def test_the_scan_sees_a_write(snippet: str) -> None:
    assert violations(snippet)


@pytest.mark.parametrize(
    "snippet",
    [
        "NODES.update().values(status='offline')",
        "node.status = 'online'",
        "def f():\n    '''Moves it to running.'''",
        "select(Task).where(Task.status == s)",
    ],
)
def test_the_scan_leaves_other_things_alone(snippet: str) -> None:
    assert not violations(snippet)


def test_the_vocabulary_matches_the_proto_enum() -> None:
    names = {n.removeprefix("JOB_STATUS_") for n in job_pb2.JobStatus.keys()}  # noqa: SIM118
    # UNSPECIFIED is proto3's zero value; SUPERSEDED was never set and stays for old peers.
    assert names - {"UNSPECIFIED", "SUPERSEDED"} == {s.name for s in Status}
    assert all(s.value == s.name.lower() for s in Status)
    deprecated = job_pb2.JobStatus.DESCRIPTOR.values_by_name["JOB_STATUS_SUPERSEDED"]
    assert deprecated.GetOptions().deprecated
