"""cynode.testing.processes: launching with a log file, stopping with a grace period,
kill -9 of the main process only, and finding a process again by pid."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from cynode.testing.processes import ROOT, Proc, launch, pid_alive, tail
from cynode.testing.waiting import wait_until

# Prints its pid and its child's, then waits; TERM is ignored when asked to be.
SCRIPT = """
import os, signal, subprocess, sys, time
if "stubborn" in sys.argv:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print("cwd", os.getcwd(), "env", os.environ.get("MARK"), flush=True)
print("child", child.pid, flush=True)
time.sleep(60)
"""


def _start(tmp_path: Path, *args: str) -> Proc:
    env = {**os.environ, "MARK": "set"}
    proc = launch("toy", [sys.executable, "-c", SCRIPT, *args], env, tmp_path / "logs" / "toy.log")
    wait_until(lambda: "child" in proc.text(), 30, "the toy's child", procs=[proc])
    return proc


def _child(proc: Proc) -> int:
    return int(proc.text().split("child ")[1].split()[0])


def test_launch_logs_env_and_cwd_and_stop_ends_the_whole_group(tmp_path: Path) -> None:
    proc = _start(tmp_path)
    assert f"cwd {ROOT} env set" in proc.tail()
    assert proc.alive() and proc.returncode is None
    child = _child(proc)
    proc.stop(timeout=10)
    assert not proc.alive() and proc.returncode == -signal.SIGTERM
    wait_until(lambda: not pid_alive(child), 10, "the child gone")
    assert proc.handle is None


def test_stop_kills_what_ignores_sigterm_after_the_grace_period(tmp_path: Path) -> None:
    proc = _start(tmp_path, "stubborn")
    started = time.monotonic()
    proc.stop(timeout=0.5)
    assert proc.returncode == -signal.SIGKILL
    assert time.monotonic() - started < 10


def test_kill9_ends_the_main_process_only(tmp_path: Path) -> None:
    proc = _start(tmp_path)
    child = _child(proc)
    proc.kill9()
    assert proc.returncode == -signal.SIGKILL
    assert pid_alive(child)
    os.kill(child, signal.SIGKILL)
    proc.close()


def test_a_process_found_by_pid_is_watched_and_stopped_by_pid(tmp_path: Path) -> None:
    started = _start(tmp_path)
    found = Proc("toy", started.pid, started.log)
    assert found.alive() and found.returncode is None
    found.stop(timeout=10)
    found.wait(5)
    assert not found.alive()
    started.wait(5)
    started.close()
    found.signal(signal.SIGTERM)  # gone: no error


def test_pid_alive_and_tail_of_what_is_not_there(tmp_path: Path) -> None:
    proc = launch("quick", [sys.executable, "-c", "print('bye')"], os.environ, tmp_path / "q.log")
    proc.wait(30)
    assert proc.tail() == "bye" and not proc.alive()
    assert not pid_alive(proc.pid)
    assert tail(tmp_path / "absent.log") == "(no log)"
    assert Proc("none", 1, tmp_path / "absent.log").text() == ""
    assert pid_alive(os.getpid())


def test_a_log_continues_across_launches_and_a_bad_argv_leaves_no_handle(tmp_path: Path) -> None:
    log = tmp_path / "same.log"
    for word in ("one", "two"):
        launch("p", [sys.executable, "-c", f"print('{word}')"], os.environ, log).wait(30)
    assert log.read_text().split() == ["one", "two"]
    with pytest.raises(OSError):
        launch("bad", [str(tmp_path / "missing")], os.environ, log)
