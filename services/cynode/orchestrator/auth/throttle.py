"""Login throttling: too many failures from one client or for one handle within a
window answer 429 until the oldest failure leaves the window.

Kept in memory per process; with several replicas each counts on its own, which bounds
an attacker to N x the limit rather than letting them through.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable


class LoginThrottle:
    def __init__(
        self,
        max_failures: int = 5,
        window_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self.max_failures = max_failures
        self.window = window_seconds
        self._clock = clock
        self._max_keys = max_keys
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float] | None:
        q = self._failures.get(key)
        if q is None:
            return None
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            del self._failures[key]
            return None
        return q

    def retry_after(self, *keys: str) -> int:
        """Seconds to wait before another attempt, 0 when allowed."""
        now = self._clock()
        wait = 0.0
        for key in keys:
            q = self._recent(key, now)
            if q is not None and len(q) >= self.max_failures:
                wait = max(wait, q[-self.max_failures] + self.window - now)
        return max(1, math.ceil(wait)) if wait > 0 else 0

    def failure(self, *keys: str) -> None:
        now = self._clock()
        if len(self._failures) >= self._max_keys:
            self._evict(now)
        for key in keys:
            q = self._failures.setdefault(key, deque(maxlen=self.max_failures))
            q.append(now)

    def success(self, *keys: str) -> None:
        for key in keys:
            self._failures.pop(key, None)

    def _evict(self, now: float) -> None:
        for key in list(self._failures):
            self._recent(key, now)
        # Still full: a flood of distinct keys; drop the oldest half rather than grow.
        if len(self._failures) >= self._max_keys:
            for key in list(self._failures)[: self._max_keys // 2]:
                del self._failures[key]
