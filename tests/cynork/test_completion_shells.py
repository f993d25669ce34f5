"""`cynork completion bash|zsh|fish` loaded into the real shells, completing for real.

Each script calls the installed `cynork` back with `_CYNORK_COMPLETE` set; these tests
load it as a user would and ask the shell itself for completions: bash through its
completion function, fish through `complete -C`, zsh (whose completion only runs inside
the line editor) in a tmux terminal with a Tab key press.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cynork.test_shell_tmux import CYNORK, Terminal

SHELLS = ("bash", "zsh", "fish")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A HOME of its own and the venv's `cynork` first on PATH, as after an install."""
    return {
        "HOME": str(tmp_path),
        "PATH": f"{CYNORK.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "TERM": "xterm",
    }


def _run(argv: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("shell", SHELLS)
def test_the_shells_are_installed(shell: str) -> None:
    # tools/system-deps.sh installs them; a missing shell fails here rather than skipping.
    assert shutil.which(shell), f"{shell} is not installed (tools/system-deps.sh)"


def _bash_complete(env: dict[str, str], words: list[str]) -> list[str]:
    """COMPREPLY of the loaded script for the words, the last one being completed."""
    script = (
        'eval "$(cynork completion bash)"\n'
        'COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))\n'
        # bash calls a completion function with: command, current word, previous word.
        '_cynork_completion cynork "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"\n'
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    return _run(["bash", "-c", script, "bash", *words], env).split()


def test_bash_completes_commands_flags_and_choices(env: dict[str, str]) -> None:
    registered = _run(["bash", "-c", 'eval "$(cynork completion bash)"; complete -p cynork'], env)
    assert "-F _cynork_completion cynork" in registered
    assert _bash_complete(env, ["cynork", "ta"]) == ["task"]
    assert _bash_complete(env, ["cynork", "task", "ca"]) == ["cancel"]
    assert _bash_complete(env, ["cynork", "task", "de"]) == ["delete"]
    assert "--status" in _bash_complete(env, ["cynork", "task", "list", "--st"])
    assert _bash_complete(env, ["cynork", "task", "list", "--status", "q"]) == ["queued"]
    assert _bash_complete(env, ["cynork", "completion", ""]) == ["bash", "zsh", "fish"]


def _fish_complete(env: dict[str, str], line: str) -> list[str]:
    out = _run(
        ["fish", "--no-config", "-c", f"cynork completion fish | source; complete -C {line!r}"], env
    )
    return [row.split("\t")[0] for row in out.splitlines()]


def test_fish_completes_commands_flags_and_choices(env: dict[str, str]) -> None:
    assert _fish_complete(env, "cynork ta") == ["task"]
    assert set(_fish_complete(env, "cynork auth ")) == {"login", "logout", "refresh", "whoami"}
    assert "--status" in _fish_complete(env, "cynork task list --st")
    assert _fish_complete(env, "cynork task list --status fa") == ["failed"]


@pytest.fixture
def zsh(env: dict[str, str]) -> Iterator[Terminal]:
    term = Terminal(["zsh", "-f", "-i"], env)
    try:
        yield term
    finally:
        term.close()


def test_zsh_completes_on_tab(zsh: Terminal) -> None:
    zsh.type(
        "PS1='zsh> '; autoload -U compinit && compinit -u && eval \"$(cynork completion zsh)\""
    )
    zsh.send("Enter")
    zsh.wait_for(lambda s: s.rstrip().endswith("zsh>"), "the prompt after loading the script")
    zsh.type("cynork task cr")
    zsh.send("Tab")
    zsh.wait_text("zsh> cynork task create")
    zsh.send("C-u")
    zsh.type("cynork task list --status fa")
    zsh.send("Tab")
    zsh.wait_text("zsh> cynork task list --status failed")
