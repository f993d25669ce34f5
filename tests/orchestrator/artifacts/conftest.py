"""A fresh SQLite database per test (the control-plane tests' fixture)."""

from tests.orchestrator.controlplane.conftest import sqlite_engine

__all__ = ["sqlite_engine"]
