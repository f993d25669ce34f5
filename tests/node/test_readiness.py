"""The start-up steps /readyz reports."""

from __future__ import annotations

import pytest

from cynode.node.readiness import STEPS, Readiness


def test_readiness_names_failed_before_pending() -> None:
    readiness = Readiness()
    assert readiness.describe() == "not ready: step config pending"
    readiness.passed("config")
    readiness.running("register", "dialing")
    assert readiness.describe() == "not ready: step register running: dialing"
    readiness.failed("images", "missing")
    assert readiness.describe() == "not ready: step images failed: missing"
    for step in STEPS:
        readiness.passed(step)
    assert readiness.ready and readiness.describe() == "ready"
    readiness.reset("dispatch")
    assert not readiness.ready
    with pytest.raises(KeyError):
        readiness.passed("no-such-step")
