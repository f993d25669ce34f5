"""After the attempts (this module runs last, by name), no log of the stack holds the
admin password, the PSK, the JWT secret, the node's JWT, or any token a test saw."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.stack import Stack, iter_secrets

from .conftest import RESULTS

pytestmark = [pytest.mark.slow, pytest.mark.podman]


def leaks(logs: list[Path], needles: set[str]) -> list[str]:
    found = []
    for log in logs:
        text = log.read_text(errors="replace")
        found += [f"{log.name}: {needle[:4]}..." for needle in needles if needle in text]
    return found


def test_scan_finds_a_planted_secret(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("login ok token=abcdefgh12345678 done\n")
    assert leaks([log], {"abcdefgh12345678"}) == ["x.log: abcd..."]
    assert leaks([log], {"zzzzzzzz12345678"}) == []


def test_no_secret_in_any_log(sec_stack: Stack, seen_tokens: set[str]) -> None:
    needles = {s for s in (*iter_secrets(sec_stack), *seen_tokens) if len(s) >= 8}
    logs = sec_stack.log_files()
    found = leaks(logs, needles)
    RESULTS[f"logs: {len(needles)} secrets looked for in {len(logs)} logs"] = not found
    assert len(needles) >= 5 and len(logs) >= 3
    assert found == []
