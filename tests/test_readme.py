"""README.md stays true: the intro, the two commands, the layout table, the make targets."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.M | re.S)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def _make_targets() -> set[str]:
    makefile = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z0-9-]*):", makefile, re.M))


def test_intro_says_what_cynode_is_in_three_sentences() -> None:
    intro = README.split("\n## ", 1)[0].split("\n", 1)[1].strip()
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", " ".join(intro.split())) if s]
    assert len(sentences) == 3, sentences


def test_the_two_commands_are_make_targets() -> None:
    block = _section("Two commands on a fresh machine (Debian 12, as root)")
    commands = re.findall(r"^make (\w+)", block, re.M)
    assert commands == ["demo", "test"]
    assert set(commands) <= _make_targets()


def test_every_make_target_in_the_readme_exists() -> None:
    named = set(re.findall(r"`make ([a-z0-9-]+)", README))
    assert named, "the README names no make target"
    assert named <= _make_targets(), named - _make_targets()


def test_layout_table_lists_exactly_the_top_level_folders() -> None:
    rows = re.findall(r"^\| `([^`]+)/` \|", _section("Layout"), re.M)
    assert len(rows) == len(set(rows)), rows
    for path in rows:
        assert (ROOT / path).is_dir(), f"the layout table names {path}/, which is gone"
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    folders = {name.split("/", 1)[0] for name in tracked if "/" in name}
    folders = {name for name in folders if not name.startswith(".")}
    assert folders == set(rows), f"missing from the table: {folders - set(rows)}"
