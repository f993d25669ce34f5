"""Jittered exponential backoff for reconnects, so many nodes do not stampede."""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, initial: float = 0.5, maximum: float = 30.0, factor: float = 2.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self._next = initial
        self._rng = random.Random()

    def reset(self) -> None:
        self._next = self.initial

    def next_delay(self) -> float:
        """A delay in [ceiling/2, ceiling]; the ceiling doubles up to the maximum."""
        ceiling = self._next
        self._next = min(self.maximum, self._next * self.factor)
        return self._rng.uniform(ceiling / 2, ceiling)
