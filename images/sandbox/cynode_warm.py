#!/usr/bin/python3
"""cynode-warm: the waiting runner of a warm single-use sandbox (SPEC §4.10).

The node creates and starts a sandbox container ahead of any job, with every sandbox
rule applied, running this program. It blocks on stdin until the node hands it one
job as one JSON line (the manifest), then becomes that job:

    {"argv": ["/bin/sh", "-c", "..."],          what the job runs (as on the cold path)
     "env": {"NAME": "value", ...},             the job's environment, over the image's
     "files": [{"name": "script", "mode": 493, "data": "<base64>"}, ...]}

The files (the script, attachments) are written into /workspace in order (a later one
replaces an earlier one of the same name), and the job runs with stdin on /dev/null (a
cold job has no stdin either). The container is never given a second job: the node
removes it after this one.

With "report": "<nonce>" in the manifest (the node's way), the runner stays the job's
parent and reports the job's end itself, so the node learns it the moment the process
exits rather than when Podman has recorded the container's stop (~50 ms later). It
relays the job's stdout and stderr through pipes, framed on its own stdout the way
Podman frames the attach stream (1 byte kind, 3 zero bytes, 4-byte big-endian length,
payload): kind 4 once, the nonce, before anything else (the node's proof that this
runner frames); kind 1 and 2 the job's stdout and stderr; kind 3 last, the end, as JSON
{"nonce", "exit_code", "oom", "out_empty"}. The job's bytes are only ever payloads, and
it never sees the nonce (read before the job exists; this process is made non-dumpable
first, so the job, same uid, can neither read its memory nor open its descriptors):
the end cannot be forged, not even by writing into the container's stdout through
/proc/1/fd/1. When the job's process has exited, everything else left in the sandbox
is killed (as the container's stop does on the cold path), the pipes are drained, and
the end says the exit code (128 + signal when killed), whether the memory cgroup's OOM
kill count grew (null when it cannot be read), and whether /workspace/out holds
anything (so the node skips collecting an empty out/). Signals the container gets
(stop, cancel) go on to the job. Without "report", the job's command replaces this
process (execve), and the container's exit state is the job's.

Exit codes of its own, before the job runs: 2 no or a bad manifest; 126/127 the
command cannot be run or found (as a shell says). Standard library of the image's
python3 only (Debian's 3.11); tools/build_images.sh installs it as
/usr/local/bin/cynode-warm.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ctypes
import json
import os
import select
import shutil
import signal
import struct
import sys
import time
from pathlib import Path
from typing import IO, Any

NAME = "cynode-warm"
WORKSPACE = "/workspace"
# A job's script and attachments travel in the manifest; the orchestrator bounds them
# far below this, so a longer line is a broken sender, not a job.
MAX_MANIFEST_BYTES = 256 * 1024 * 1024

# The frames of the reporting mode: Podman's attach framing, with kinds of our own.
HEADER = struct.Struct(">BxxxL")
HELLO, STDOUT, STDERR, END = 4, 1, 2, 3
READ_SIZE = 65536
# After the job's process exited and the rest was killed, how long the pipes may take
# to reach their end (a process stuck in the kernel keeps its end open).
DRAIN_S = 2.0
# Signals the container's stop or a cancel sends; the job gets them as on the cold path.
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
# Python starts with these ignored, and an exec keeps an ignored signal ignored; the job
# gets them at their defaults, as on the cold path (`yes | head -1` ends quietly).
DEFAULTED = (signal.SIGPIPE, signal.SIGXFSZ)
OOM_COUNTERS = ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control")
OUT_DIR = "out"
# Entries looked at before out/ is called "not empty" anyway (the node then looks).
OUT_SCAN_LIMIT = 10000
PR_SET_DUMPABLE = 4
# The host's (initial) pid namespace: its inode is fixed by the kernel (PROC_PID_INIT_INO).
INITIAL_PID_NS = "pid:[4026531836]"


class Failure(Exception):
    """One readable line for stderr."""


def read_manifest(stream: IO[bytes], limit: int = MAX_MANIFEST_BYTES) -> dict[str, Any]:
    line = stream.readline(limit + 1)
    if not line.strip():
        raise Failure("no job was handed over (stdin closed)")
    if len(line) > limit:
        raise Failure(f"the manifest is longer than {limit} bytes")
    try:
        manifest = json.loads(line)
    except ValueError as exc:
        raise Failure(f"the manifest is not JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise Failure("the manifest is not a JSON object")
    argv = manifest.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise Failure("the manifest's argv must be a non-empty list of strings")
    env = manifest.get("env", {})
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise Failure("the manifest's env must map strings to strings")
    if not isinstance(manifest.get("files", []), list):
        raise Failure("the manifest's files must be a list")
    return manifest


def write_files(files: list[Any], workspace: str = WORKSPACE) -> None:
    """Each file by its base name only (the node sends safe names; a name with a slash,
    '.' or '..' is refused here too, so nothing lands outside the workspace)."""
    for item in files:
        if not isinstance(item, dict):
            raise Failure("a manifest file must be an object")
        name, mode, data = item.get("name"), item.get("mode", 0o644), item.get("data", "")
        if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\0" in name:
            raise Failure(f"refusing the file name {name!r}")
        if not isinstance(mode, int) or not 0 <= mode <= 0o777 or not isinstance(data, str):
            raise Failure(f"bad mode or data for {name!r}")
        try:
            content = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise Failure(f"the data of {name!r} is not base64") from None
        path = Path(workspace) / name
        try:
            # O_NOFOLLOW: a link left in the workspace by the image is replaced, not followed.
            if path.is_symlink():
                path.unlink()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
            with os.fdopen(fd, "wb") as out:
                out.write(content)
            path.chmod(mode)  # the umask may have taken bits the job asked for
        except OSError as exc:
            raise Failure(f"cannot write {path}: {exc.strerror}") from None


def become(argv: list[str], env: dict[str, str]) -> int:
    """Replaces this process with the job; returns only when that fails."""
    environ = dict(os.environ)
    environ.update(env)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdout.flush()
    previous = {sig: signal.signal(sig, signal.SIG_DFL) for sig in DEFAULTED}
    try:
        os.execvpe(argv[0], argv, environ)
    except OSError as exc:
        for sig, handler in previous.items():  # this process goes on: as it was
            signal.signal(sig, handler)
        code, message = cannot_run(argv[0], exc)
        sys.stderr.write(message)
        return code
    return 0  # pragma: no cover - execvpe does not return


def not_dumpable() -> bool:
    """Makes this process non-dumpable: another process of the same uid (the job) can
    then neither ptrace it nor open its /proc entries (memory, descriptors). execve
    makes the job dumpable again, which is of no matter."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def oom_kills(paths: tuple[str, ...] = OOM_COUNTERS) -> int | None:
    """The memory cgroup's OOM kill count (v2 memory.events, v1 memory.oom_control)."""
    for path in paths:
        try:
            with Path(path).open() as counters:
                for counter in counters:
                    name, _, value = counter.partition(" ")
                    if name == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            continue
    return None


def out_empty(workspace: str = WORKSPACE, limit: int = OUT_SCAN_LIMIT) -> bool:
    """Whether the workspace's out/ holds nothing but directories (or is missing): then
    the node's artifact collection would find nothing. Anything odd (a link, an
    unreadable directory, too many entries) counts as not empty."""
    root = Path(workspace) / OUT_DIR
    if root.is_symlink():
        return False
    if not root.exists():
        return True
    pending, seen = [str(root)], 0
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:
            return False
        for entry in entries:
            seen += 1
            if seen > limit or not entry.is_dir(follow_symlinks=False):
                return False
            pending.append(entry.path)
    return True


class Relay:
    """Writes frames on the attach stream's stdout; a node gone away is ignored (the
    job's output is then still drained, so the job never blocks on a full pipe)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.broken = False

    def frame(self, kind: int, payload: bytes) -> None:
        data = memoryview(HEADER.pack(kind, len(payload)) + payload)
        while data and not self.broken:
            try:
                data = data[os.write(self.fd, data) :]
            except OSError:
                self.broken = True


def spawn(argv: list[str], env: dict[str, str], out_w: int, err_w: int) -> int:
    """Starts the job's process: stdin /dev/null, stdout and stderr on the pipes, its
    signals at their defaults and none of this process's descriptors. posix_spawn runs
    no Python in the child, so it is safe in a process with threads (a fork there can
    deadlock or abort the child). Raises OSError when the command cannot be run."""
    environ = dict(os.environ)
    environ.update(env)
    actions: list[tuple[Any, ...]] = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, out_w, 1),
        (os.POSIX_SPAWN_DUP2, err_w, 2),
    ]
    actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in inherited_fds()]
    return os.posix_spawn(
        executable(argv[0], environ.get("PATH")),
        argv,
        environ,
        file_actions=actions,
        setsigmask=(),
        setsigdef=(*DEFAULTED, *FORWARDED, signal.SIGCHLD),
    )


def executable(command: str, path: str | None) -> str:
    """The file execvp would run for `command`, looked up on the job's own PATH (as the
    container runtime does on the cold path). A name found nowhere gives a path that
    does not exist, so spawning it fails as "not found"."""
    if "/" in command:
        return command
    dirs = [Path(d or ".") for d in (path if path is not None else os.defpath).split(os.pathsep)]
    found = shutil.which(command, path=os.pathsep.join(map(str, dirs)))
    if found is not None:
        return found
    # Present but not executable: spawning it fails as execvp would, "Permission denied".
    present = (d / command for d in dirs)
    return str(next((f for f in present if f.is_file()), Path("/nonexistent") / command))


def inherited_fds() -> list[int]:
    """This process's descriptors above stderr that an exec would keep open (Python opens
    its own close-on-exec; one inherited from the container's start would leak)."""
    found = []
    for entry in Path("/proc/self/fd").iterdir():
        fd = int(entry.name)
        with contextlib.suppress(OSError):  # the listing's own descriptor, closed by now
            if fd > 2 and os.get_inheritable(fd):
                found.append(fd)
    return found


def cannot_run(command: str, exc: OSError) -> tuple[int, str]:
    """As a shell says it: 127 and "not found", or 126 and why the command cannot run."""
    if isinstance(exc, FileNotFoundError):
        return 127, f"{NAME}: {command}: not found\n"
    return 126, f"{NAME}: {command}: {exc.strerror}\n"


def exit_code(status: int) -> int:
    """As a shell says it: the exit status, or 128 + the signal that killed the job."""
    return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def contained(ns_link: str = "/proc/self/ns/pid") -> bool:
    """Whether this process runs as the child of pid 1 in a pid namespace of its own (a
    sandbox under its init): only there is killing "everything else" confined to the
    job. Run anywhere else (a test on a host), kill(-1) would hit every process the
    user owns, so the runner then leaves the rest alone."""
    try:
        return os.getppid() == 1 and str(Path(ns_link).readlink()) != INITIAL_PID_NS
    except OSError:
        return False


def reaped(kill_rest: bool) -> None:
    """The job's process has exited: signals go nowhere now, and (as when the main
    process of a cold sandbox exits) nothing else of the job outlives it; kill(-1)
    spares this process and pid 1."""
    for sig in FORWARDED:
        signal.signal(sig, signal.SIG_IGN)
    if kill_rest:
        with contextlib.suppress(OSError):
            os.kill(-1, signal.SIGKILL)


def supervise(
    argv: list[str],
    env: dict[str, str],
    nonce: str,
    out_fd: int = 1,
    workspace: str = WORKSPACE,
    kill_rest: bool | None = None,
) -> int:
    """Runs the job as a child, relays its output framed, reports its end (the module's
    docstring); returns the job's exit code, which the runner then exits with."""
    if kill_rest is None:
        kill_rest = contained()
    relay = Relay(out_fd)
    relay.frame(HELLO, nonce.encode())
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    oom_before = oom_kills()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGCHLD, *FORWARDED)}
    # SIGCHLD wakes the select below through the wakeup pipe: no polling interval.
    signal.signal(signal.SIGCHLD, lambda *_: None)
    old_wakeup = signal.set_wakeup_fd(wake_w)
    try:
        return _relay(
            argv,
            env,
            nonce,
            relay,
            (out_r, out_w, err_r, err_w, wake_r),
            oom_before,
            workspace,
            kill_rest,
        )
    finally:
        signal.set_wakeup_fd(old_wakeup)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        os.close(wake_r)
        os.close(wake_w)


def _relay(
    argv: list[str],
    env: dict[str, str],
    nonce: str,
    relay: Relay,
    fds: tuple[int, int, int, int, int],
    oom_before: int | None,
    workspace: str,
    kill_rest: bool,
) -> int:
    out_r, out_w, err_r, err_w, wake_r = fds
    try:
        pid = spawn(argv, env, out_w, err_w)
    except OSError as exc:
        code, message = cannot_run(argv[0], exc)
        relay.frame(STDERR, message.encode())
        for fd in (out_r, out_w, err_r, err_w):
            os.close(fd)
        return report_end(relay, nonce, code, oom_before, workspace)
    os.close(out_w)
    os.close(err_w)
    for sig in FORWARDED:
        signal.signal(sig, lambda number, _frame: os.kill(pid, number))
    open_pipes = {out_r: STDOUT, err_r: STDERR}
    status: int | None = None
    deadline: float | None = None
    while open_pipes:
        if status is None:
            done, waited = os.waitpid(pid, os.WNOHANG)
            if done:
                status = waited
                reaped(kill_rest)
                deadline = time.monotonic() + DRAIN_S
        timeout = None if deadline is None else max(deadline - time.monotonic(), 0)
        if timeout == 0:
            break
        readable, _, _ = select.select([*open_pipes, wake_r], [], [], timeout)
        for fd in readable:
            if fd == wake_r:
                os.read(wake_r, 4096)
                continue
            data = os.read(fd, READ_SIZE)
            if data:
                relay.frame(open_pipes[fd], data)
            else:
                del open_pipes[fd]
                os.close(fd)
    for fd in open_pipes:  # held open past the drain's bound by something stuck
        os.close(fd)
    if status is None:  # the job closed its stdout and stderr before it exited
        _, status = os.waitpid(pid, 0)
        reaped(kill_rest)
    return report_end(relay, nonce, exit_code(status), oom_before, workspace)


def report_end(relay: Relay, nonce: str, code: int, oom_before: int | None, workspace: str) -> int:
    """Frames the job's end (the last frame) and returns its exit code."""
    oom_after = oom_kills()
    oom = None if oom_before is None or oom_after is None else oom_after > oom_before
    end = {"nonce": nonce, "exit_code": code, "oom": oom, "out_empty": out_empty(workspace)}
    relay.frame(END, json.dumps(end).encode())
    return code


def main(argv: list[str], stdin: IO[bytes] | None = None) -> int:
    if len(argv) != 1:
        sys.stderr.write(f"usage: {NAME} (reads one job manifest line on stdin)\n")
        return 2
    not_dumpable()  # before the manifest (and its nonce) is read
    try:
        manifest = read_manifest(stdin if stdin is not None else sys.stdin.buffer)
        write_files(manifest.get("files", []))
    except Failure as exc:
        sys.stderr.write(f"{NAME}: {exc}\n")
        return 2
    nonce = manifest.get("report")
    if isinstance(nonce, str) and nonce:
        sys.stdout.flush()
        return supervise(manifest["argv"], manifest.get("env", {}), nonce)
    return become(manifest["argv"], manifest.get("env", {}))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
