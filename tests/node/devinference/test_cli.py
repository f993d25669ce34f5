"""Entry points: argument parsing, serving until stopped, and the missing-extra path."""

from __future__ import annotations

import asyncio
import importlib
import socket
from pathlib import Path

import aiohttp
import pytest

from cynode.node.devinference import DevModelUnavailable, cli, find_gguf, start_dev_inference
from cynode.node.devinference._model import MODEL_PATH_ENV
from cynode.testing import free_port


def test_listen_parsing() -> None:
    parser = cli.build_parser()
    assert parser.parse_args([]).listen == ("127.0.0.1", 11434)
    assert parser.parse_args(["--listen", "0.0.0.0:1"]).listen == ("0.0.0.0", 1)
    assert parser.parse_args(["--listen", "[::1]:2"]).listen == ("::1", 2)
    assert parser.parse_args(["--listen", ":3"]).listen == ("127.0.0.1", 3)


def test_bad_listen_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--listen", "nowhere"])
    assert info.value.code == 2


def test_module_entry_imports() -> None:
    module = importlib.import_module("cynode.node.devinference.__main__")
    assert module.main is cli.main


def test_missing_model_file_is_reported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(MODEL_PATH_ENV, str(tmp_path / "absent.gguf"))
    with pytest.raises(DevModelUnavailable):
        find_gguf()
    assert cli.main(["--listen", "127.0.0.1:0"]) == 2
    assert "absent.gguf" in caplog.text


def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MODEL_PATH_ENV, raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DevModelUnavailable, match="inference-dev"):
        find_gguf()


def test_model_path_override(monkeypatch: pytest.MonkeyPatch) -> None:
    real = find_gguf()
    monkeypatch.setenv(MODEL_PATH_ENV, str(real))
    assert find_gguf() == real


@pytest.mark.model
async def test_busy_port_fails_cleanly() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(OSError):
            await start_dev_inference("127.0.0.1", port)
        assert await asyncio.to_thread(cli.main, ["--listen", f"127.0.0.1:{port}"]) == 1


@pytest.mark.model
async def test_serve_until_stopped() -> None:
    port = free_port()
    args = cli.build_parser().parse_args(["--listen", f"127.0.0.1:{port}", "--ctx", "256"])
    stop = asyncio.Event()
    task = asyncio.create_task(cli.serve(args, stop))
    async with aiohttp.ClientSession() as client:
        for _ in range(400):
            try:
                async with client.get(f"http://127.0.0.1:{port}/api/version") as response:
                    assert response.status == 200
                    break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
        else:
            pytest.fail("dev inference never answered")
    stop.set()
    await asyncio.wait_for(task, 30)
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


@pytest.mark.model
async def test_handle_as_context_manager() -> None:
    async with await start_dev_inference("127.0.0.1", 0, n_ctx=256) as handle:
        assert handle.url == f"http://127.0.0.1:{handle.port}"
        assert handle.load_seconds > 0
        port = handle.port
    await handle.close()  # a second close is harmless
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
