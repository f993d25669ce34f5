"""The command line: flags, environment, signals, and the module entry point."""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import socket
import subprocess
import sys
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
