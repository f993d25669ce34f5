from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cynode.jobs.v1 import job_pb2
from cynode.node.runtime import SandboxSettings
from cynode.node.runtime.context import JobContext, StopKind
from cynode.node.runtime.result import NO_EXIT_CODE, build_result, short_error
from tests.node.runtime.conftest import make_spec


def _ctx(**state: object) -> JobContext:
    ctx = JobContext(
        spec=make_spec(job_id="J", attempt=2, commands=["true"]),
        settings=SandboxSettings(node_id="n1", max_output_bytes=4),
        client=None,  # type: ignore[arg-type]  # results never talk to Podman
        timeout_s=10,
    )
    for key, value in state.items():
        setattr(ctx, key, value)
    return ctx


@pytest.mark.parametrize(
    ("state", "error", "status", "reason"),
    [
        ({"exit_code": 0}, None, job_pb2.JOB_STATUS_COMPLETED, ""),
        ({"exit_code": 3}, None, job_pb2.JOB_STATUS_FAILED, "exit_code"),
        ({"exit_code": 137, "oom_killed": True}, None, job_pb2.JOB_STATUS_FAILED, "oom"),
        ({"exit_code": 137}, None, job_pb2.JOB_STATUS_FAILED, "exit_code"),
        (
            {"exit_code": 143, "stop_kind": StopKind.TIMEOUT},
            None,
            job_pb2.JOB_STATUS_FAILED,
            "timeout",
        ),
        (
            {"exit_code": 143, "stop_kind": StopKind.CANCEL, "stop_reason": "canceled"},
            None,
            job_pb2.JOB_STATUS_CANCELED,
            "canceled",
        ),
        ({"stop_kind": StopKind.CANCEL}, "error: x", job_pb2.JOB_STATUS_CANCELED, "canceled"),
        ({"stop_kind": StopKind.TIMEOUT}, "error: x", job_pb2.JOB_STATUS_FAILED, "timeout"),
        ({"exit_code": 0}, "error: broken", job_pb2.JOB_STATUS_FAILED, "error: broken"),
    ],
)
def test_status_and_reason(
    state: dict[str, object], error: str | None, status: int, reason: str
) -> None:
    result = build_result(_ctx(**state), error)
    assert (result.status, result.reason) == (status, reason)


def test_result_carries_ids_output_flags_and_times() -> None:
    ctx = _ctx(exit_code=0, started_at=datetime(2026, 1, 1, tzinfo=UTC))
    ctx.ended_at = datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)
    ctx.output.add("stdout", b"abcdef")
    ctx.output.add("stderr", b"e")
    result = build_result(ctx)
    assert (result.job_id, result.attempt, result.node_id) == ("J", 2, "n1")
    assert (result.stdout, result.stdout_truncated) == (b"abcd", True)
    assert (result.stderr, result.stderr_truncated) == (b"e", False)
    assert result.ended_at.seconds - result.started_at.seconds == 5


def test_a_job_that_never_ran_has_no_exit_code_and_no_start() -> None:
    result = build_result(_ctx(), "error: image missing")
    assert result.exit_code == NO_EXIT_CODE
    assert not result.HasField("started_at")


def test_short_error_is_one_capped_line() -> None:
    assert short_error(ValueError("first\nsecond")) == "error: first"
    assert short_error(ValueError("")) == "error: ValueError"
    assert len(short_error("x" * 1000)) == len("error: ") + 200
