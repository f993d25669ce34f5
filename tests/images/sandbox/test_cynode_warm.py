"""The warm sandbox's waiting runner: the manifest it accepts and refuses, the files it
writes, and (as a script on the system python3, as in the image) the job it becomes."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
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
