from __future__ import annotations

import io
import tarfile

import pytest

from cynode.jobs.v1 import job_pb2
from cynode.node.runtime.inputs import (
    COMMANDS_RUNNER,
    UnsupportedJob,
    WorkspaceFile,
    plan_job,
    safe_file_name,
    workspace_tar,
)
from tests.node.runtime.conftest import make_spec


def test_commands_travel_as_arguments_of_one_runner() -> None:
    plan = plan_job(make_spec(commands=["echo 'a b'", "exit 3"]))
    assert plan.command == [
        "/bin/sh",
        "-c",
        COMMANDS_RUNNER,
        "cynode-commands",
        "echo 'a b'",
        "exit 3",
    ]
    assert plan.files == ()


def test_script_without_shebang_runs_under_sh() -> None:
    plan = plan_job(make_spec(script="echo hi\n"))
    assert plan.command == ["/bin/sh", "/workspace/script"]
    assert plan.files == (WorkspaceFile("script", b"echo hi\n", 0o755),)


def test_script_with_shebang_is_executed() -> None:
    assert plan_job(make_spec(script="#!/usr/bin/python3\n")).command == ["/workspace/script"]


def test_attachments_come_first_so_the_script_wins_a_name_clash() -> None:
    spec = make_spec(
        script="true",
        attachments=[job_pb2.Attachment(name="script", content=b"x")],
    )
    assert [f.name for f in plan_job(spec).files] == ["script", "script"]
    assert plan_job(spec).files[-1].content == b"true"


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        (make_spec(input_mode=job_pb2.INPUT_MODE_PROMPT, prompt=" \n"), "needs a prompt"),
        (make_spec(input_mode=job_pb2.INPUT_MODE_COMMANDS), "at least one command"),
        (make_spec(input_mode=job_pb2.INPUT_MODE_SCRIPT), "needs a script"),
        (make_spec(input_mode=job_pb2.INPUT_MODE_UNSPECIFIED), "no input mode"),
    ],
)
def test_unsupported_jobs(spec: job_pb2.JobSpec, reason: str) -> None:
    with pytest.raises(UnsupportedJob, match=reason):
        plan_job(spec)


def test_a_prompt_is_a_file_for_the_runner_never_a_command() -> None:
    prompt = "$(touch /workspace/pwned); rm -rf /"
    spec = make_spec(
        input_mode=job_pb2.INPUT_MODE_PROMPT,
        prompt=prompt,
        attachments=[job_pb2.Attachment(name="prompt.txt", content=b"x")],
    )
    plan = plan_job(spec)
    assert plan.command == ["/usr/local/bin/cynode-prompt", "/workspace/prompt.txt"]
    assert plan.needs_inference
    # Written last, so the prompt wins over an attachment of the same name.
    assert [(f.name, f.content) for f in plan.files] == [
        ("prompt.txt", b"x"),
        ("prompt.txt", prompt.encode()),
    ]


def test_use_inference_keeps_the_command_and_asks_for_the_pod() -> None:
    plain = plan_job(make_spec(commands=["true"]))
    pod = plan_job(make_spec(commands=["true"], use_inference=True))
    assert pod.command == plain.command
    assert pod.needs_inference and not plain.needs_inference
    assert plan_job(make_spec(script="true", use_inference=True)).needs_inference


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("data.csv", "data.csv"),
        ("../../etc/passwd", "passwd"),
        ("/abs/path/x", "x"),
        ("..\\..\\win.txt", "win.txt"),
        ("..", "attachment-4"),
        (".", "attachment-4"),
        ("", "attachment-4"),
        ("dir/", "attachment-4"),
        ("a\x00b\nc", "abc"),
        ("é" * 200, "é" * 127),
    ],
)
def test_safe_file_name(name: str, expected: str) -> None:
    assert safe_file_name(name, 4) == expected


def test_workspace_tar_owns_files_by_the_sandbox_user() -> None:
    data = workspace_tar((WorkspaceFile("a.txt", b"abc"), WorkspaceFile("run", b"#!", 0o755)))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {"a.txt", "run"}
        assert (members["a.txt"].uid, members["a.txt"].gid, members["a.txt"].mode) == (
            10000,
            10000,
            0o644,
        )
        assert members["run"].mode == 0o755
        extracted = tar.extractfile("a.txt")
        assert extracted is not None and extracted.read() == b"abc"
