"""What a benchmark reads of a running process from /proc: its CPU time so far."""

from __future__ import annotations

import contextlib
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """CPU time a process has had, all threads, from the scheduler's nanosecond count
    (``/proc/PID/stat`` counts in 10 ms ticks, too coarse for a 50 ms stream); 0.0 for
    a process that is gone. Unlike wall time, barely moved by what else runs on a
    shared machine, so it shows what a phase costs."""
    total = 0
    with contextlib.suppress(FileNotFoundError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9
