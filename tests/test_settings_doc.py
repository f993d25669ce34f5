"""docs/settings.md is what tools/settings_doc.py makes from the settings dataclasses;
`make test` fails when someone changes a setting and not the page."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import settings_doc


def test_the_committed_reference_is_current() -> None:
    expected = settings_doc.render(settings_doc.sections())
    assert settings_doc.DOC.read_text() == expected, "run `make settings-doc`"


def test_every_process_and_the_settings_operators_asked_for_are_documented() -> None:
    text = settings_doc.render(settings_doc.sections())
    for title in (
        "## Orchestrator",
        "## Control plane",
        "## Node",
        "## Inference proxy",
        "## cynork",
    ):
        assert title in text
    for row in (
        "| `sandbox.memory_mb` | `CYNODE_SANDBOX_MEMORY_MB` | `1024` |",
        "| `sandbox.pids` | `CYNODE_SANDBOX_PIDS` | `256` |",
        "| `inference.warm_pods` | `CYNODE_INFERENCE_WARM_PODS` | `1` |",
        "| `--timeout` | `CYNODE_PROXY_TIMEOUT` | `120.0` |",
    ):
        assert row in text, row


def test_check_fails_on_a_stale_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = tmp_path / "settings.md"
    monkeypatch.setattr(settings_doc, "DOC", page)
    monkeypatch.setattr(settings_doc, "ROOT", tmp_path)
    assert settings_doc.main(["--check"]) == 1  # missing
    assert settings_doc.main([]) == 0
    assert settings_doc.main(["--check"]) == 0
    page.write_text(page.read_text().replace("`1024`", "`2048`"))
    assert settings_doc.main(["--check"]) == 1
