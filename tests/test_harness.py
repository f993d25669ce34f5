"""One harness (cynode.testing) starts CyNode's processes: no test, behave suite, bench
or tool defines its own port picker or spawns `cynode-orchestrator serve`,
`cynode-node run` or `cynode-node dev-inference` itself. Each rule is shown to catch
what it forbids before it is applied to the tree."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sourcescan import parse_source

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("tests", "features", "bench", "tools")
# The harness's own tests check the command lines it builds.
EXEMPT = (ROOT / "tests" / "testing",)
PICKERS = {"free_port", "_free_port", "pick_free_port", "find_free_port"}
# A launch names the program (console script or module) and its subcommand.
LAUNCHES = {
    "serve": ("cynode-orchestrator", "cynode.orchestrator"),
    "run": ("cynode-node", "cynode.node"),
    "dev-inference": ("cynode-node", "cynode.node"),
}


def _sequences(tree: ast.AST) -> Iterator[tuple[int, list[ast.expr]]]:
    """Every list or tuple literal, and every call's positional arguments (argv given
    as separate arguments, as to asyncio.create_subprocess_exec)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.List | ast.Tuple):
            yield node.lineno, list(node.elts)
        elif isinstance(node, ast.Call):
            yield node.lineno, list(node.args)


def _launches(tree: ast.AST) -> Iterator[str]:
    for lineno, items in _sequences(tree):
        words = {i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)}
        text = " ".join(ast.unparse(i) for i in items)
        for sub, programs in LAUNCHES.items():
            if sub in words and any(p in text for p in programs):
                yield f"line {lineno}: spawns `{programs[0]} {sub}` (use cynode.testing)"


def _binds_port_zero(call: ast.Call) -> bool:
    if not (isinstance(call.func, ast.Attribute) and call.func.attr == "bind" and call.args):
        return False
    address = call.args[0]
    return (
        isinstance(address, ast.Tuple)
        and len(address.elts) == 2
        and isinstance(address.elts[1], ast.Constant)
        and address.elts[1].value == 0
    )


def _holds(call: ast.Call) -> bool:
    listens = isinstance(call.func, ast.Attribute) and call.func.attr == "listen"
    return listens or any(k.arg in ("sock", "sockets") for k in call.keywords)


def _outside_functions(node: ast.AST) -> Iterator[ast.AST]:
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            yield child
            yield from _outside_functions(child)


def _works_while_bound(tree: ast.AST, bind: ast.Call) -> bool:
    """Whether the `with socket.socket()` block of `bind` does more after it than read
    the port: then the socket is held (bound, never listening: a port that refuses)."""
    for block in ast.walk(tree):
        if not isinstance(block, ast.With):
            continue
        for i, stmt in enumerate(block.body):
            if isinstance(stmt, ast.Expr) and stmt.value is bind:
                rest = block.body[i + 1 :]
                return any(
                    not isinstance(s, ast.Return) and "getsockname" not in ast.unparse(s)
                    for s in rest
                )
    return False


def _pickers(tree: ast.AST) -> Iterator[str]:
    """A bind to port 0 that only reads the port is a port picker. A socket that
    listens, is handed to a server (`sock=`, `sockets=`) or stays bound while its
    block works is held: a server socket or a deliberately busy port, which tests may."""
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    scopes = [list(_outside_functions(tree)), *(list(ast.walk(f)) for f in functions)]
    for nodes in scopes:
        calls = [n for n in nodes if isinstance(n, ast.Call)]
        if any(_holds(c) for c in calls):
            continue
        for call in filter(_binds_port_zero, calls):
            if not _works_while_bound(tree, call):
                yield f"line {call.lineno}: picks a port itself (use cynode.testing.free_port)"
    for fn in functions:
        if fn.name in PICKERS:
            yield f"line {fn.lineno}: defines {fn.name} (use cynode.testing.free_port)"


def problems(source: str) -> list[str]:
    tree = parse_source(source)
    return sorted({*_launches(tree), *_pickers(tree)})


@pytest.mark.parametrize(
    "source",
    [
        'subprocess.Popen([str(BIN / "cynode-orchestrator"), "serve"], env=env)',
        'argv = [str(BIN / "cynode-node"), "run", "-c", str(config)]',
        'asyncio.create_subprocess_exec(sys.executable, "-m", "cynode.node", "run")',
        'subprocess.run([sys.executable, "-m", "cynode.orchestrator.cli", "serve", "--x"])',
        'Popen([BIN / "cynode-node", "dev-inference", "--listen", listen])',
        "def free_port() -> int:\n    return 0",
        "def _free_port() -> int:\n    return 0",
        "def pick() -> int:\n"
        "    with socket.socket() as s:\n"
        '        s.bind(("127.0.0.1", 0))\n'
        "        return s.getsockname()[1]",
        'sock = socket.socket()\nsock.bind(("", 0))\nport = sock.getsockname()[1]',
        "for _ in range(4):\n"
        "    with socket.socket() as s:\n"
        '        s.bind(("127.0.0.1", 0))\n'
        "        ports.append(s.getsockname()[1])",
    ],
)
def test_each_rule_catches_what_it_forbids(source: str) -> None:
    assert problems(source), source


@pytest.mark.parametrize(
    "source",
    [
        'cli.main(["serve", "--help"])',
        'subprocess.run([str(BIN / "cynode-orchestrator"), "user", "create", "bob"])',
        'subprocess.run([str(BIN / "cynode-node"), "doctor"])',
        "context.completed = subprocess.run(context.orchestrator.argv(), env=env)",
        "def busy() -> None:\n"
        "    with socket.socket() as s:\n"
        '        s.bind(("127.0.0.1", 0))\n'
        "        s.listen()",
        "from cynode.testing import free_port\nport = free_port()",
        "async def serve() -> None:\n"
        "    sock = socket.socket()\n"
        '    sock.bind(("127.0.0.1", 0))\n'
        "    server = await asyncio.start_server(handler, sock=sock)",
        "with socket.socket() as probe:\n"
        '    probe.bind(("127.0.0.1", 0))\n'
        '    url = f"http://127.0.0.1:{probe.getsockname()[1]}"  # bound, never listening\n'
        "    assert run(url) == 1",
    ],
)
def test_what_the_rules_allow(source: str) -> None:
    assert problems(source) == [], source


def test_no_test_feature_bench_or_tool_launches_on_its_own() -> None:
    found: list[str] = []
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            if path == Path(__file__).resolve() or any(map(path.is_relative_to, EXEMPT)):
                continue
            found += [f"{path.relative_to(ROOT)}: {p}" for p in problems(path.read_text())]
    assert found == [], "\n".join(found)


def test_the_old_homes_are_gone() -> None:
    assert not (ROOT / "tests" / "fixtures" / "ports.py").exists()
    assert not (ROOT / "features" / "worker_node" / "steps" / "harness.py").exists()
