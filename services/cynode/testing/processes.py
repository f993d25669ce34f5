"""Launching a process with its env and log file, and ending it: SIGTERM to its
process group with a grace period, or kill -9 of the main process for fault tests.

Every process starts in a session of its own, so stopping it reaches its children
(the node's `podman system service`) and Ctrl-C in the caller's terminal does not.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

# The checkout the harness runs from (services/cynode/testing/ -> the root), and the
# bin dir of the environment it is installed in, which holds the console scripts.
ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.prefix) / "bin"


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); /proc says whether it is one.
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0] != "Z"
    return True


@dataclass
class Proc:
    """A process the harness started (popen set) or found again by pid (popen None,
    as `make down` finds the processes `make up` left running)."""

    name: str
    pid: int
    log: Path
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)
    handle: IO[bytes] | None = field(default=None, repr=False, compare=False)

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return pid_alive(self.pid)

    @property
    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def signal(self, sig: int) -> None:
        """`sig` to the whole process group."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to the process group, SIGKILL after `timeout`."""
        if self.alive():
            self.signal(signal.SIGTERM)
            self.wait(timeout)
            if self.alive():
                self.signal(signal.SIGKILL)
                self.wait(10.0)
        self.close()

    def kill9(self) -> None:
        """kill -9 of the main process only (its children, e.g. Podman, live on)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.wait(10.0)

    def wait(self, timeout: float) -> None:
        if self.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
            return
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.1)

    def close(self) -> None:
        """Closes this side's log handle (the process keeps its own)."""
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    def tail(self, lines: int = 40) -> str:
        return tail(self.log, lines)

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


def launch(
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    log: Path,
    *,
    prefix: Sequence[str] = (),
    cwd: Path = ROOT,
) -> Proc:
    """Starts `prefix + argv` (a prefix such as `nsenter --net=...` runs it on a test
    host) with stdout and stderr appended to `log`, so a restarted process continues
    the same file."""
    log.parent.mkdir(parents=True, exist_ok=True)
    handle = log.open("ab")
    try:
        popen = subprocess.Popen(
            [*prefix, *argv],
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError:
        handle.close()
        raise
    return Proc(name, popen.pid, log, popen, handle)
