"""The warm sandbox's waiting runner: the manifest it accepts and refuses, the files it
writes, and (as a script on the system python3, as in the image) the job it becomes."""

from __future__ import annotations

import base64
import ctypes
import io
import json
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

import cynode_warm

SOURCE = Path(cynode_warm.__file__)
SYSTEM_PYTHON = Path("/usr/bin/python3")


def line(manifest: Any) -> io.BytesIO:
    return io.BytesIO(json.dumps(manifest).encode() + b"\n")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_a_manifest_is_read_from_one_line() -> None:
    stream = io.BytesIO(b'{"argv": ["true"], "env": {"A": "1"}}\nthe job\'s own stdin\n')
    manifest = cynode_warm.read_manifest(stream)
    assert manifest == {"argv": ["true"], "env": {"A": "1"}}
    assert stream.read() == b"the job's own stdin\n"  # nothing past the line is taken


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "no job was handed over"),
        (b"\n", "no job was handed over"),
        (b"{not json\n", "not JSON"),
        (b"[1, 2]\n", "not a JSON object"),
        (b'{"env": {}}\n', "argv must be a non-empty list"),
        (b'{"argv": []}\n', "argv must be a non-empty list"),
        (b'{"argv": ["sh", 1]}\n', "argv must be a non-empty list"),
        (b'{"argv": ["sh"], "env": {"A": 1}}\n', "env must map strings"),
        (b'{"argv": ["sh"], "env": []}\n', "env must map strings"),
        (b'{"argv": ["sh"], "files": {}}\n', "files must be a list"),
    ],
)
def test_bad_manifests_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(cynode_warm.Failure, match=message):
        cynode_warm.read_manifest(io.BytesIO(data))


def test_a_manifest_over_the_limit_is_refused() -> None:
    with pytest.raises(cynode_warm.Failure, match="longer than 10 bytes"):
        cynode_warm.read_manifest(io.BytesIO(b'{"argv": ["true"]}\n'), limit=10)


def test_files_are_written_in_order_with_their_modes(tmp_path: Path) -> None:
    (tmp_path / "old").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "old")
    files = [
        {"name": "script", "mode": 0o644, "data": b64(b"first")},
        {"name": "script", "mode": 0o755, "data": b64(b"#!/bin/sh\necho hi\n")},
        {"name": "link", "data": b64(b"replaced, not followed")},
        {"name": "empty"},
    ]
    cynode_warm.write_files(files, str(tmp_path))
    assert (tmp_path / "script").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert (tmp_path / "script").stat().st_mode & 0o777 == 0o755
    assert not (tmp_path / "link").is_symlink()
    assert (tmp_path / "link").read_bytes() == b"replaced, not followed"
    assert (tmp_path / "old").read_text() == "x"
    assert (tmp_path / "empty").read_bytes() == b""
    assert (tmp_path / "empty").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("script", "must be an object"),
        ({"name": "../etc/passwd", "data": ""}, "refusing the file name"),
        ({"name": "..", "data": ""}, "refusing the file name"),
        ({"name": "", "data": ""}, "refusing the file name"),
        ({"name": 3, "data": ""}, "refusing the file name"),
        ({"name": "a", "mode": 0o7777, "data": ""}, "bad mode or data"),
        ({"name": "a", "mode": "755", "data": ""}, "bad mode or data"),
        ({"name": "a", "data": 5}, "bad mode or data"),
        ({"name": "a", "data": "not base64!"}, "not base64"),
    ],
)
def test_bad_files_are_refused(tmp_path: Path, item: Any, message: str) -> None:
    with pytest.raises(cynode_warm.Failure, match=message):
        cynode_warm.write_files([item], str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_cannot_be_written_is_a_failure(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    with pytest.raises(cynode_warm.Failure, match="cannot write"):
        cynode_warm.write_files([{"name": "taken", "data": ""}], str(tmp_path))


def test_main_reports_a_bad_manifest_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cynode_warm.main(["cynode-warm"], io.BytesIO(b"")) == 2
    assert capsys.readouterr().err == "cynode-warm: no job was handed over (stdin closed)\n"
    assert cynode_warm.main(["cynode-warm", "extra"], io.BytesIO(b"")) == 2
    assert "usage: cynode-warm" in capsys.readouterr().err


def test_a_command_that_is_missing_or_not_executable_exits_like_a_shell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fd 0 swap is the job's: keep the test process's own stdin.
    monkeypatch.setattr(os, "dup2", lambda fd, to: None)
    missing = str(tmp_path / "missing")
    assert cynode_warm.main(["cynode-warm"], line({"argv": [missing]})) == 127
    assert capsys.readouterr().err == f"cynode-warm: {missing}: not found\n"
    plain = tmp_path / "plain"
    plain.write_text("echo never\n")
    assert cynode_warm.become([str(plain)], {}) == 126
    assert "Permission denied" in capsys.readouterr().err
    # A failed exec leaves this process's signals as they were (Python's SIGPIPE
    # ignored): at their defaults, a write to a closed pipe would kill the process.
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN


def run_script(manifest: Any, workspace: Path) -> subprocess.CompletedProcess[bytes]:
    """The runner as the image runs it: the system python3, no site-packages, its own
    process (it execs the job), with WORKSPACE pointed at a temporary directory."""
    source = SOURCE.read_text().replace(
        'WORKSPACE = "/workspace"', f"WORKSPACE = {str(workspace)!r}"
    )
    script = workspace.parent / "cynode-warm"
    script.write_text(source)
    return subprocess.run(
        [str(SYSTEM_PYTHON), "-I", "-S", str(script)],
        input=json.dumps(manifest).encode() + b"\n" + b"left for the job\n",
        capture_output=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "KEPT": "from the image", "OVERRIDDEN": "old"},
        cwd=workspace,  # the container's working dir
        check=False,
    )


@pytest.mark.skipif(not SYSTEM_PYTHON.exists(), reason="no system python3")
def test_the_runner_becomes_the_job(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    manifest = {
        "argv": ["/bin/sh", "-c", 'echo "$KEPT/$OVERRIDDEN/$NEW"; . ./lib.sh; cat; exit 7'],
        "env": {"OVERRIDDEN": "new", "NEW": "job"},
        "files": [{"name": "lib.sh", "data": b64(b"echo sourced $PWD\n")}],
    }
    result = run_script(manifest, workspace)
    # exit code, output and env are the job's; stdin is empty, as on the cold path.
    assert result.returncode == 7, result.stderr
    assert result.stdout.decode().splitlines() == [
        "from the image/new/job",
        f"sourced {workspace}",
    ]
    assert result.stderr == b""


@pytest.mark.skipif(not SYSTEM_PYTHON.exists(), reason="no system python3")
def test_the_job_it_becomes_has_sigpipe_at_its_default(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    result = run_script({"argv": ["sh", "-c", "yes | head -1"]}, workspace)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"y\n", b"")


# -- the reporting mode: the runner stays the job's parent and reports its end ------------


def frames(data: bytes) -> list[tuple[int, bytes]]:
    """The runner's stdout split into (kind, payload) frames; every byte accounted for."""
    found: list[tuple[int, bytes]] = []
    while data:
        kind, length = cynode_warm.HEADER.unpack_from(data)
        found.append((kind, data[8 : 8 + length]))
        assert len(data) >= 8 + length, "a truncated frame"
        data = data[8 + length :]
    return found


def supervised(
    tmp_path: Path, argv: list[str], env: dict[str, str] | None = None
) -> tuple[int, list[tuple[int, bytes]], dict[str, Any]]:
    out = tmp_path / "frames"
    workspace = tmp_path / "ws"
    workspace.mkdir(exist_ok=True)
    with out.open("wb") as sink:
        code = cynode_warm.supervise(argv, env or {}, "n0nce", sink.fileno(), str(workspace))
    found = frames(out.read_bytes())
    assert found[0] == (cynode_warm.HELLO, b"n0nce")
    assert found[-1][0] == cynode_warm.END
    assert cynode_warm.END not in [k for k, _ in found[:-1]]
    return code, found[1:-1], json.loads(found[-1][1])


def joined(found: list[tuple[int, bytes]], kind: int) -> bytes:
    return b"".join(p for k, p in found if k == kind)


def test_the_job_runs_as_a_child_its_streams_framed_and_its_end_reported(
    tmp_path: Path,
) -> None:
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGCHLD)
    code, found, end = supervised(
        tmp_path, ["sh", "-c", "echo out; echo err >&2; echo $JOB; exit 3"], {"JOB": "env"}
    )
    assert code == 3
    assert joined(found, cynode_warm.STDOUT) == b"out\nenv\n"
    assert joined(found, cynode_warm.STDERR) == b"err\n"
    assert end["nonce"] == "n0nce" and end["exit_code"] == 3 and end["out_empty"] is True
    assert end["oom"] in (True, False, None)
    # The test process's own signal handling is as it was.
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGCHLD)) == handlers


def test_bytes_that_look_like_frames_stay_the_jobs_output(tmp_path: Path) -> None:
    forged = cynode_warm.HEADER.pack(cynode_warm.END, 2) + b"{}"
    octal = "".join("\\" + format(b, "03o") for b in forged)
    script = f"printf '{octal}'"
    code, found, end = supervised(tmp_path, ["sh", "-c", script])
    assert (code, end["exit_code"]) == (0, 0)
    assert joined(found, cynode_warm.STDOUT) == forged


def test_a_killed_job_reports_128_plus_the_signal(tmp_path: Path) -> None:
    code, _, end = supervised(tmp_path, ["sh", "-c", "kill -9 $$"])
    assert code == end["exit_code"] == 137


def test_a_missing_command_reports_127(tmp_path: Path) -> None:
    code, found, _ = supervised(tmp_path, [str(tmp_path / "missing")])
    assert code == 127
    assert b"not found" in joined(found, cynode_warm.STDERR)


def test_a_command_that_cannot_run_reports_126(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("echo never\n")
    code, found, end = supervised(tmp_path, [str(plain)])
    assert code == end["exit_code"] == 126
    message = f"cynode-warm: {plain}: Permission denied\n"
    assert joined(found, cynode_warm.STDERR) == message.encode()


def test_the_command_is_found_on_the_jobs_own_path(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "only-here"
    tool.write_text("#!/bin/sh\necho found it\n")
    tool.chmod(0o755)
    (bin_dir / "not-executable").write_text("echo never\n")
    path = f"/nonexistent:{bin_dir}:/usr/bin:/bin"
    code, found, _ = supervised(tmp_path, ["only-here"], {"PATH": path})
    assert (code, joined(found, cynode_warm.STDOUT)) == (0, b"found it\n")
    code, found, _ = supervised(tmp_path, ["not-executable"], {"PATH": path})
    assert code == 126 and b"Permission denied" in joined(found, cynode_warm.STDERR)
    code, found, _ = supervised(tmp_path, ["only-here"], {"PATH": "/usr/bin:/bin"})
    assert code == 127 and b"only-here: not found" in joined(found, cynode_warm.STDERR)


def test_the_job_starts_with_default_signals_and_no_stray_descriptors(tmp_path: Path) -> None:
    opened = os.open(os.devnull, os.O_RDONLY)
    stray = os.dup2(opened, 123, inheritable=True)  # above any the job's ls opens
    os.close(opened)
    previous = signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as Python starts
    try:
        code, found, _ = supervised(
            tmp_path,
            ["sh", "-c", "grep SigIgn /proc/self/status; ls /proc/self/fd; yes | head -1"],
        )
    finally:
        signal.signal(signal.SIGPIPE, previous)
        os.close(stray)
    assert code == 0
    lines = joined(found, cynode_warm.STDOUT).decode().split()
    ignored = int(lines[1], 16)
    assert not ignored & (1 << (signal.SIGPIPE - 1))
    assert str(stray) not in lines[2:-1] and "2" in lines[2:-1]
    assert lines[-1] == "y"
    assert joined(found, cynode_warm.STDERR) == b""  # yes died of SIGPIPE, quietly


def test_output_after_the_exit_is_drained_within_a_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Outside a sandbox nothing is killed: a background process keeps the pipe open,
    # so the drain stops at its bound, with what had arrived.
    monkeypatch.setattr(cynode_warm, "DRAIN_S", 0.3)
    code, found, _ = supervised(tmp_path, ["sh", "-c", "echo first; sleep 5 & exit 0"])
    assert code == 0
    assert joined(found, cynode_warm.STDOUT) == b"first\n"


def test_a_job_that_closes_its_streams_first_is_still_waited_for(tmp_path: Path) -> None:
    code, found, _ = supervised(tmp_path, ["sh", "-c", "exec >&- 2>&-; sleep 0.2; exit 5"])
    assert code == 5 and found == []


def test_a_signal_to_the_runner_goes_to_the_job(tmp_path: Path) -> None:
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        code, found, _ = supervised(tmp_path, ["sh", "-c", "echo up; sleep 30"])
    finally:
        timer.cancel()
    assert code == 128 + signal.SIGTERM
    assert joined(found, cynode_warm.STDOUT) == b"up\n"


def test_out_is_empty_only_with_nothing_but_directories(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    assert cynode_warm.out_empty(str(ws))  # no out/ at all
    (ws / "out" / "a" / "b").mkdir(parents=True)
    assert cynode_warm.out_empty(str(ws))
    (ws / "out" / "a" / "b" / "file").write_text("x")
    assert not cynode_warm.out_empty(str(ws))
    (ws / "out" / "a" / "b" / "file").unlink()
    (ws / "out" / "a" / "c").mkdir()
    assert not cynode_warm.out_empty(str(ws), limit=2)
    other = tmp_path / "other"
    other.mkdir()
    (other / "out").symlink_to(ws)
    assert not cynode_warm.out_empty(str(other))
    (ws / "out" / "a" / "b").chmod(0)
    try:
        if not os.access(ws / "out" / "a" / "b", os.R_OK):  # root reads it anyway
            assert not cynode_warm.out_empty(str(ws))
    finally:
        (ws / "out" / "a" / "b").chmod(0o755)


def test_the_oom_kill_count_is_read_from_either_cgroup_version(tmp_path: Path) -> None:
    v2, v1, bad = tmp_path / "memory.events", tmp_path / "memory.oom_control", tmp_path / "x"
    v2.write_text("low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\n")
    v1.write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 5\n")
    bad.write_text("oom_kill many\n")
    assert cynode_warm.oom_kills((str(v2), str(v1))) == 2
    assert cynode_warm.oom_kills((str(tmp_path / "missing"), str(v1))) == 5
    assert cynode_warm.oom_kills((str(bad),)) is None
    assert cynode_warm.oom_kills((str(tmp_path / "missing"),)) is None


def test_only_a_sandboxed_runner_kills_the_rest(tmp_path: Path) -> None:
    # The test runs on a host (or in a CI container) as a child of pytest: never "contained".
    assert cynode_warm.contained() is False
    assert cynode_warm.contained(str(tmp_path / "missing")) is False


def test_a_relay_to_a_closed_stream_keeps_going(tmp_path: Path) -> None:
    read, write = os.pipe()
    os.close(read)
    relay = cynode_warm.Relay(write)
    previous = signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        relay.frame(cynode_warm.STDOUT, b"lost")
        relay.frame(cynode_warm.STDOUT, b"lost too")
    finally:
        signal.signal(signal.SIGPIPE, previous)
        os.close(write)
    assert relay.broken


def test_the_runner_is_made_not_dumpable(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, ...]] = []

    class Libc:
        def prctl(self, *args: int) -> int:
            calls.append(args)
            return 0

    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: Libc())
    assert cynode_warm.not_dumpable() is True
    assert calls == [(cynode_warm.PR_SET_DUMPABLE, 0, 0, 0, 0)]
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: object())
    assert cynode_warm.not_dumpable() is False


@pytest.mark.skipif(not SYSTEM_PYTHON.exists(), reason="no system python3")
def test_a_manifest_with_a_report_nonce_runs_the_reporting_mode(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    manifest = {"argv": ["/bin/sh", "-c", "echo hi; mkdir -p out; echo x > out/f; exit 4"]}
    result = run_script({**manifest, "report": "s3cret"}, workspace)
    assert result.returncode == 4, result.stderr
    found = frames(result.stdout)
    assert found[0] == (cynode_warm.HELLO, b"s3cret")
    assert found[1] == (cynode_warm.STDOUT, b"hi\n")
    end = json.loads(found[-1][1])
    assert (end["nonce"], end["exit_code"], end["out_empty"]) == ("s3cret", 4, False)
