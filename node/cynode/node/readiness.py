"""Start-up steps and their state, which `/readyz` reports.

The node is ready only when every step has passed, in the SPEC's order; otherwise the
answer names the first step that failed or is still pending.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

STEPS: tuple[str, ...] = (
    "config",
    "register",
    "fetch_config",
    "apply_config",
    "ack_config",
    "runtime",
    "images",
    "cleanup",
    "inference",
    "dispatch",
)


class StepState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"


@dataclass
class StepStatus:
    state: StepState = StepState.PENDING
    detail: str = ""


class Readiness:
    def __init__(self) -> None:
        self.steps: dict[str, StepStatus] = {name: StepStatus() for name in STEPS}
        self.history: list[tuple[str, StepState]] = []

    def _set(self, step: str, state: StepState, detail: str = "") -> None:
        if step not in self.steps:
            raise KeyError(step)
        self.steps[step] = StepStatus(state, detail)
        self.history.append((step, state))

    def running(self, step: str, detail: str = "") -> None:
        self._set(step, StepState.RUNNING, detail)

    def passed(self, step: str, detail: str = "") -> None:
        self._set(step, StepState.PASSED, detail)

    def failed(self, step: str, detail: str) -> None:
        self._set(step, StepState.FAILED, detail)

    def reset(self, step: str, detail: str = "") -> None:
        self._set(step, StepState.PENDING, detail)

    @property
    def ready(self) -> bool:
        return all(s.state is StepState.PASSED for s in self.steps.values())

    def blocking(self) -> tuple[str, StepStatus] | None:
        """The first step that is not passed: a failure wins over an earlier pending one."""
        for name, status in self.steps.items():
            if status.state is StepState.FAILED:
                return name, status
        for name, status in self.steps.items():
            if status.state is not StepState.PASSED:
                return name, status
        return None

    def describe(self) -> str:
        blocking = self.blocking()
        if blocking is None:
            return "ready"
        name, status = blocking
        text = f"not ready: step {name} {status.state.value}"
        return f"{text}: {status.detail}" if status.detail else text
