"""The command line: flags, environment, signals, and the module entry point."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from cynode.proxy import ConfigError, ProxyConfig, cli
from cynode.proxy._listen import bind_listeners, close_listeners
from cynode.testing import free_port
from tests.proxy.conftest import ScriptedUpstream

PROXY_ROOT = str(Path(cli.__file__).resolve().parents[2])


def _config(argv: list[str], env: dict[str, str]) -> ProxyConfig:
    return cli.config_from_args(cli.build_parser().parse_args(argv), env)


def test_flags_win_over_environment() -> None:
    env = {
        "CYNODE_PROXY_LISTEN": "127.0.0.1:1,unix:/tmp/x.sock",
        "CYNODE_PROXY_UPSTREAM": "http://env:1",
    }
    config = _config(
        [
            "--listen",
            "127.0.0.1:2",
            "--upstream",
            "unix:/run/o.sock",
            "--max-body-bytes",
            "5",
            "--timeout",
            "3",
            "--idle-timeout",
            "4",
        ],
        env,
    )
    assert [str(a) for a in config.listen] == ["127.0.0.1:2"]
    assert str(config.upstream) == "unix:/run/o.sock"
    assert (config.max_body_bytes, config.timeout, config.stream_idle_timeout) == (5, 3.0, 4.0)


def test_environment_fallbacks() -> None:
    config = _config(
        [],
        {
            "CYNODE_PROXY_LISTEN": "127.0.0.1:1, unix:/tmp/x.sock",
            "CYNODE_PROXY_UPSTREAM": "http://env:1",
            "CYNODE_PROXY_MAX_BODY_BYTES": "7",
            "CYNODE_PROXY_TIMEOUT": "9",
            "CYNODE_PROXY_IDLE_TIMEOUT": "11",
        },
    )
    assert [str(a) for a in config.listen] == ["127.0.0.1:1", "unix:/tmp/x.sock"]
    assert str(config.upstream) == "http://env:1"
    assert (config.max_body_bytes, config.timeout, config.stream_idle_timeout) == (7, 9.0, 11.0)
    defaults = _config([], {"CYNODE_PROXY_UPSTREAM": "http://e:1"})
    assert [str(a) for a in defaults.listen] == ["127.0.0.1:11434"]


def test_missing_upstream_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CYNODE_PROXY_UPSTREAM", raising=False)
    with pytest.raises(SystemExit) as info:
        cli.main(["--listen", "127.0.0.1:0"])
    assert info.value.code == 2
    assert "upstream" in capsys.readouterr().err


def test_bad_listen_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--listen", "nope", "--upstream", "http://127.0.0.1:1"])
    assert info.value.code == 2
    assert "nope" in capsys.readouterr().err


async def test_busy_port_exits_1() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = await asyncio.to_thread(
            cli.main,
            ["--listen", f"127.0.0.1:{port}", "--upstream", "http://127.0.0.1:1"],
        )
    assert code == 1


async def test_serve_until_stopped(upstream: ScriptedUpstream) -> None:
    port = free_port()
    config = _config(["--listen", f"127.0.0.1:{port}", "--upstream", upstream.url], {})
    stop = asyncio.Event()
    task = asyncio.create_task(cli.serve(config, stop))
    async with aiohttp.ClientSession() as client:
        for _ in range(100):
            try:
                async with client.get(f"http://127.0.0.1:{port}/healthz") as response:
                    assert await response.text() == "ok"
                    break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
        else:
            pytest.fail("proxy never answered")
    stop.set()
    await asyncio.wait_for(task, 10)
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_module_entry_imports() -> None:
    module = importlib.import_module("cynode.proxy.__main__")
    assert module.main is cli.main


def test_sigterm_stops_the_process_promptly(upstream: ScriptedUpstream, tmp_path: Path) -> None:
    sock = tmp_path / "p.sock"
    env = dict(os.environ, PYTHONPATH=PROXY_ROOT, CYNODE_PROXY_UPSTREAM="http://127.0.0.1:9")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cynode.proxy", "--listen", f"unix:{sock}"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(200):
            if sock.exists():
                break
            if proc.poll() is not None:
                break
            subprocess.run(["sleep", "0.05"], check=True)
        assert sock.exists(), proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGTERM)
        # Well inside podman's 10 s stop timeout; no timing claim beyond "it exits".
        assert proc.wait(timeout=8) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not sock.exists()


def test_a_bad_number_in_the_environment_names_the_variable() -> None:
    env = {"CYNODE_PROXY_UPSTREAM": "http://e:1", "CYNODE_PROXY_TIMEOUT": "soon"}
    with pytest.raises(ConfigError, match="CYNODE_PROXY_TIMEOUT must be a number"):
        _config([], env)


async def test_a_stop_before_serving_ends_serve_at_once(
    upstream: ScriptedUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The sidecar binds first and imports aiohttp after; a SIGTERM in between is only
    # noted (cli._note_stop), and serve() then stops as soon as it has started.
    sock = tmp_path / "early.sock"
    config = _config(["--listen", f"unix:{sock}", "--upstream", upstream.url], {})
    sockets = bind_listeners(config)
    assert sock.exists()
    monkeypatch.setattr(cli, "_early_stop", [])
    cli._note_stop(signal.SIGTERM, None)
    await asyncio.wait_for(cli.serve(config, sockets=sockets), 10)
    assert not sock.exists()


def test_listeners_accept_before_the_server_runs(tmp_path: Path) -> None:
    # What lets the node start the sandbox early: a bound listener queues connections.
    sock = tmp_path / "q.sock"
    tcp_port = free_port()
    config = _config(
        ["--listen", f"unix:{sock}", "--listen", f"127.0.0.1:{tcp_port}", "--upstream", "unix:/x"],
        {},
    )
    sockets = bind_listeners(config)
    try:
        assert oct(sock.stat().st_mode & 0o777) == oct(config.unix_socket_mode)
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(sock))
        socket.create_connection(("127.0.0.1", tcp_port), timeout=2).close()
        # An address already taken fails the whole bind and leaves nothing behind: not
        # the TCP listener bound before it, nor a socket file (bound after TCP).
        other = free_port()
        argv = ["--listen", f"unix:{tmp_path}/other.sock", "--listen", f"127.0.0.1:{other}"]
        argv += ["--listen", f"127.0.0.1:{tcp_port}", "--upstream", "unix:/x"]
        with pytest.raises(OSError):
            bind_listeners(_config(argv, {}))
        assert not (tmp_path / "other.sock").exists()
        with socket.socket() as again:
            again.bind(("127.0.0.1", other))
    finally:
        close_listeners(sockets)
    assert not sock.exists()


def _fresh_python(code: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=PROXY_ROOT)
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )


def test_the_sidecar_imports_aiohttp_server_without_its_client() -> None:
    # In a process that has not imported aiohttp (the sidecar's), the server comes
    # without aiohttp's client, and the proxy's own server module works on it.
    done = _fresh_python(
        "import sys\n"
        "from cynode.proxy._import import import_server_only\n"
        "assert import_server_only()\n"
        "import aiohttp, cynode.proxy._server as s\n"
        "from aiohttp.http import SERVER_SOFTWARE\n"
        "assert aiohttp.__version__ in SERVER_SOFTWARE, SERVER_SOFTWARE\n"
        "client = ('aiohttp.client', 'aiohttp.connector', 'aiohttp.cookiejar', 'aiohttp.tracing')\n"
        "print(sorted(n for n in sys.modules if n in client))\n"
        "print(s.start_proxy.__name__)\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[]", "start_proxy"]


def test_an_aiohttp_imported_already_is_left_as_it_is() -> None:
    from cynode.proxy._import import import_server_only

    assert "aiohttp" in sys.modules
    assert import_server_only() is False
    assert sys.modules["aiohttp"] is aiohttp


@pytest.fixture
def without_aiohttp() -> Iterator[None]:
    """This process as if aiohttp were not imported yet; afterwards the modules loaded
    meanwhile are dropped and the test session's own are back."""

    def ours() -> list[str]:
        return [n for n in sys.modules if n == "aiohttp" or n.startswith("aiohttp.")]

    saved = {name: sys.modules.pop(name) for name in ours()}
    try:
        yield
    finally:
        for name in ours():
            del sys.modules[name]
        sys.modules.update(saved)


@pytest.mark.usefixtures("without_aiohttp")
def test_the_server_comes_without_the_client_in_this_process_too() -> None:
    from cynode.proxy._import import import_server_only

    assert import_server_only() is True
    assert "aiohttp.web" in sys.modules and "aiohttp.client" not in sys.modules
    assert sys.modules["aiohttp"].__version__ == aiohttp.__version__


@pytest.mark.usefixtures("without_aiohttp")
def test_a_server_that_needs_the_package_init_gets_the_full_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # aiohttp.web failing without the package's __init__: everything loaded that way
    # is dropped and the full package imported, as before.
    from cynode.proxy import _import

    real = importlib.import_module
    calls: list[str] = []

    def flaky(name: str, package: str | None = None) -> object:
        calls.append(name)
        if name == "aiohttp.web" and len(calls) == 1:
            real("aiohttp.hdrs")
            raise ImportError("needs __init__")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", flaky)
    assert _import.import_server_only() is False
    assert calls == ["aiohttp.web", "aiohttp.web"]
    assert hasattr(sys.modules["aiohttp"], "ClientSession")


@pytest.mark.usefixtures("without_aiohttp")
def test_no_aiohttp_at_all_fails_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    from cynode.proxy import _import

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setitem(sys.modules, "aiohttp", None)  # what a missing package looks like
    monkeypatch.delitem(sys.modules, "aiohttp")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if "-packages" not in p])
    with pytest.raises(ImportError):
        _import.import_server_only()
