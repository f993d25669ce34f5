"""`cynork models list` and `cynork chat` (the installed binary) against the real
OpenAI door: an in-process orchestrator, a node's inference link and the development
model (tests/orchestrator/inference/chatkit). The interactive chat runs in tmux, so
prompt-toolkit, Ctrl-C and Ctrl-D behave as for a user."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from cynode.testing.launchers import DevModel
from tests.cynork.test_shell_tmux import CYNORK, Terminal
from tests.orchestrator.inference.chatkit import MODEL, Door, dev_model, running_door

__all__ = ["dev_model"]

pytestmark = pytest.mark.slow


@pytest.fixture
async def door(dev_model: DevModel, tmp_path: Path) -> AsyncIterator[Door]:
    async with running_door(dev_model, tmp_path / "orch") as door:
        await door.add_node()
        yield door


@pytest.fixture
async def home(door: Door, tmp_path: Path) -> Path:
    login = await door.login()
    config = tmp_path / "home" / ".config" / "cynork" / "config.yaml"
    config.parent.mkdir(parents=True, mode=0o700)
    config.write_text(
        yaml.safe_dump(
            {
                "gateway_url": door.url,
                "token": login["access_token"],
                "refresh_token": login["refresh_token"],
                "user": login["handle"],
            }
        )
    )
    config.chmod(0o600)
    return tmp_path / "home"


async def cynork(home: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(CYNORK),
        *args,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin", "NO_COLOR": "1"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_models_list_and_one_shot_chat(home: Path) -> None:
    code, out, err = await cynork(home, "models", "list")
    assert (code, out) == (0, f"model={MODEL} owned_by=cynode\n"), err
    code, out, _ = await cynork(home, "models", "list", "-o", "json")
    assert json.loads(out)["data"][0]["id"] == MODEL

    code, out, err = await cynork(home, "chat", "-m", "Say hi.", "--plain")
    assert code == 0, err
    assert out.strip() and out.endswith("\n")

    code, out, err = await cynork(home, "chat", "-m", "Say hi.", "--model", MODEL, "-o", "json")
    assert code == 0, err
    completion = json.loads(out)
    assert completion["object"] == "chat.completion"
    assert completion["usage"]["completion_tokens"] > 0

    code, _, err = await cynork(home, "chat", "-m", "hi", "--model", "nope:1b")
    assert code == 4 and "not found" in err


async def test_interactive_chat_in_a_terminal(home: Path) -> None:
    term = Terminal([str(CYNORK), "chat", "--plain"], {"HOME": str(home), "TERM": "xterm"})

    async def wait_text(text: str) -> str:
        return await asyncio.to_thread(term.wait_text, text)

    try:
        await wait_text("you>")
        # Multi-line input: Esc Enter starts a new line, Enter sends.
        term.type("Remember the word lighthouse.")
        term.send("Escape", "Enter")
        term.type("Reply with one word.")
        term.send("Enter")
        await asyncio.to_thread(
            term.wait_for, lambda s: s.count("you>") >= 2, "the answer, then a new prompt"
        )
        # Ctrl-C while an answer streams stops it; the chat goes on.
        poem = "Write a very long poem about the sea, at least forty lines."
        term.type(poem)
        term.send("Enter")

        def answering(screen: str) -> bool:
            after = screen.split(poem, 1)[-1].strip()
            return bool(after) and not after.endswith("you>")

        # At once when the first words show: a fixed wait let a quick answer end first
        # on a quiet machine, and the Ctrl-C then met an empty prompt.
        await asyncio.to_thread(term.wait_for, answering, "the answer to start")
        term.send("C-c")
        await wait_text("[stopped]")
        await asyncio.to_thread(
            term.wait_for, lambda s: s.count("you>") >= 3, "a prompt after Ctrl-C"
        )
        term.type("/model nope:1b")
        term.send("Enter")
        await wait_text("(model: nope:1b)")
        term.type("hi")
        term.send("Enter")
        await wait_text("not found")
        term.type(f"/model {MODEL}")
        term.send("Enter")
        term.type("/clear")
        term.send("Enter")
        await wait_text("(conversation cleared)")
        term.type("/exit")
        term.send("Enter")
        assert await asyncio.to_thread(term.wait_exit) == "0"
    finally:
        term.close()
