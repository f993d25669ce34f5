"""`cynork models list` and `cynork chat` in process (CliRunner, in a worker thread)
against the real OpenAI door (tests/orchestrator/inference/chatkit), with the prompt
replaced by a scripted one; tests/cynork/test_chat.py drives the binary in tmux."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from cynode.testing.launchers import DevModel
from cynork import _chat
from cynork._app import Seams
from cynork._client import GatewayClient
from cynork.cli import cli
from tests.orchestrator.inference.chatkit import MODEL, Door, dev_model, running_door

__all__ = ["dev_model"]

pytestmark = pytest.mark.slow


@pytest.fixture
async def door(dev_model: DevModel, tmp_path: Path) -> AsyncIterator[Door]:
    async with running_door(dev_model, tmp_path / "orch") as door:
        await door.add_node()
        yield door


class Script:
    """Stands in for prompt-toolkit's session: answers `prompt()` from a list; an
    exception class in the list is raised instead (Ctrl-C, Ctrl-D)."""

    def __init__(self, lines: list[Any]) -> None:
        self._lines: Iterator[Any] = iter(lines)
        self.prompts: list[str] = []

    def prompt(self, text: str) -> str:
        self.prompts.append(text)
        item = next(self._lines, EOFError)
        if isinstance(item, type) and issubclass(item, BaseException):
            raise item
        return str(item)


async def run(door: Door, config_dir: Path, *args: str, token: str | None = None) -> Result:
    seams = Seams(
        environ={
            "CYNORK_GATEWAY_URL": door.url,
            "CYNORK_TOKEN": token or await door.token(),
            "XDG_CONFIG_HOME": str(config_dir),
        },
        stderr_tty=False,
        stdout_tty=False,
        stdin_tty=False,
    )
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args), obj=seams)


async def test_models_list_and_one_shot(door: Door, config_dir: Path) -> None:
    listed = await run(door, config_dir, "models", "list")
    assert listed.exit_code == 0, listed.output
    assert listed.stdout == f"model={MODEL} owned_by=cynode\n"
    as_json = await run(door, config_dir, "-o", "json", "models", "list")
    assert json.loads(as_json.stdout)["data"][0]["id"] == MODEL

    one = await run(door, config_dir, "chat", "-m", "Say hi.", "--plain")
    assert one.exit_code == 0 and one.stdout.strip(), one.output
    whole = await run(door, config_dir, "chat", "-m", "Say hi.", "-o", "json")
    assert json.loads(whole.stdout)["choices"][0]["message"]["content"]
    missing = await run(door, config_dir, "chat", "-m", "hi", "--model", "nope:1b")
    assert missing.exit_code == 4 and "not found" in missing.stderr
    refused = await run(door, config_dir, "chat", "-o", "json")
    assert refused.exit_code == 2
    bad = await run(door, config_dir, "models", "list", token="not-a-token")
    assert bad.exit_code == 3


async def test_no_model_served(dev_model: DevModel, tmp_path: Path, config_dir: Path) -> None:
    async with running_door(dev_model, tmp_path / "empty") as door:
        nothing = await run(door, config_dir, "chat", "-m", "hi")
        assert nothing.exit_code == 2 and "no model" in nothing.stderr
        unavailable = await run(door, config_dir, "chat", "-m", "hi", "--model", MODEL)
        assert unavailable.exit_code == 7


async def test_the_conversation_is_kept_and_the_commands_work(
    door: Door, config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = Script(
        [
            "My name is Ada.",
            KeyboardInterrupt,  # Ctrl-C at the prompt: nothing happens
            "",
            "/model",
            "/model nope:1b",
            "hi",  # fails (unknown model): one line, the chat goes on
            f"/model {MODEL}",
            "What is my name?",
            "/clear",
            "/exit",
        ]
    )
    sent: list[list[dict[str, str]]] = []
    real_stream = GatewayClient.chat_stream

    def spy(self: Any, body: dict[str, Any]) -> Any:
        sent.append(list(body["messages"]))
        return real_stream(self, body)

    monkeypatch.setattr(GatewayClient, "chat_stream", spy)
    monkeypatch.setattr(_chat, "PromptSession", lambda **_kw: script)
    result = await run(door, config_dir, "chat")
    assert result.exit_code == 0, result.output
    assert "not found" in result.stderr and "(conversation cleared)" in result.stderr
    assert f"model: {MODEL}" in result.stderr
    # The second question went with the first and its answer; the failed one did not.
    assert [m["role"] for m in sent[-1]] == ["user", "assistant", "user"]
    assert sent[-1][0]["content"] == "My name is Ada."
    assert script.prompts[0] == f"you ({MODEL})> "


async def test_ctrl_c_mid_answer_keeps_what_arrived(door: Door, config_dir: Path) -> None:
    def ask() -> tuple[str, list[str]]:
        seams = Seams(
            environ={
                "CYNORK_GATEWAY_URL": door.url,
                "CYNORK_TOKEN": token,
                "XDG_CONFIG_HOME": str(config_dir),
            }
        )
        from cynork._app import App

        app = App(
            seams,
            config_path=None,
            output_mode="table",
            quiet=True,
            no_color=True,
            gateway_url=None,
            ca_file=None,
            insecure=False,
        )
        chat = _chat.Conversation(app, MODEL, plain=True)
        written: list[str] = []

        def write(piece: str) -> None:
            written.append(piece)
            if len(written) == 2:
                raise KeyboardInterrupt

        answer = chat.ask("Write a long poem about the sea.", write)
        return answer, [m["role"] for m in chat.messages] + written[-1:]

    token = await door.token()
    answer, tail = await asyncio.to_thread(ask)
    assert answer and tail == ["user", "assistant", "\n[stopped]"]
