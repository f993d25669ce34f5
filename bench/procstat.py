"""What a benchmark reads of a running process from /proc: its CPU time so far."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _ticks(stat: Path) -> int:
    """utime + stime of a /proc stat file, in clock ticks (the name may hold spaces)."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def cpu_seconds(pid: int) -> float:
    """CPU time a process has had, all threads, from the scheduler's nanosecond count
    (``/proc/PID/stat`` counts in 10 ms ticks, too coarse for a 50 ms stream); 0.0 for
    a process that is gone. Unlike wall time, barely moved by what else runs on a
    shared machine, so it shows what a phase costs.

    Threads that have ended are in no task's count any more (a download's or an
    upload's writing thread, a worker pool shut down): their share is the process's
    ticks, which keep them, less the live threads' ticks, added at tick resolution."""
    live_ns = 0
    live_ticks = 0
    with contextlib.suppress(FileNotFoundError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                ns = int((task / "schedstat").read_text().split()[0])
                ticks = _ticks(task / "stat")
                live_ns += ns
                live_ticks += ticks
    try:
        ended = max(0, _ticks(Path(f"/proc/{pid}/stat")) - live_ticks)
    except (FileNotFoundError, ProcessLookupError):
        ended = 0
    return live_ns / 1e9 + ended / _TICK
