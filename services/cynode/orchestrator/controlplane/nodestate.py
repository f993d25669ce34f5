"""What an administrator set of a node (SPEC §2.8), apart from whether it is connected."""

from __future__ import annotations

from enum import StrEnum


class NodeState(StrEnum):
    ACTIVE = "active"  # takes work
    DRAINING = "draining"  # no new work; what it runs finishes
    DISABLED = "disabled"  # no new work; what it ran was requeued
