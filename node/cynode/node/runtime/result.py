"""Turning what happened to a job into its JobResult (pure)."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from cynode.jobs.v1 import job_pb2
from cynode.node.runtime.context import JobContext, StopKind

# exit_code when the job's process never ran or never reported one.
NO_EXIT_CODE = -1
_MAX_ERROR_CHARS = 200


def short_error(error: BaseException | str) -> str:
    """'error: <one line>' for JobResult.reason; Podman's messages carry no secrets."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, BaseException) and not str(error).strip():
        text = type(error).__name__
    return f"error: {text[:_MAX_ERROR_CHARS]}"


def _timestamp(moment: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(moment)
    return ts


def status_and_reason(ctx: JobContext, error: str | None) -> tuple[job_pb2.JobStatus, str]:
    """Precedence: cancel, timeout, runtime error, OOM, exit code."""
    if ctx.stop_kind is StopKind.CANCEL:
        return job_pb2.JOB_STATUS_CANCELED, ctx.stop_reason or "canceled"
    if ctx.stop_kind is StopKind.TIMEOUT:
        return job_pb2.JOB_STATUS_FAILED, "timeout"
    if error is not None:
        return job_pb2.JOB_STATUS_FAILED, error
    if ctx.oom_killed:
        return job_pb2.JOB_STATUS_FAILED, "oom"
    if ctx.exit_code == 0:
        return job_pb2.JOB_STATUS_COMPLETED, ""
    return job_pb2.JOB_STATUS_FAILED, "exit_code"


def build_result(ctx: JobContext, error: str | None = None) -> job_pb2.JobResult:
    status, reason = status_and_reason(ctx, error)
    result = job_pb2.JobResult(
        job_id=ctx.spec.job_id,
        attempt=ctx.spec.attempt,
        status=status,
        exit_code=NO_EXIT_CODE if ctx.exit_code is None else ctx.exit_code,
        stdout=ctx.output.stdout.data,
        stderr=ctx.output.stderr.data,
        stdout_truncated=ctx.output.stdout.truncated,
        stderr_truncated=ctx.output.stderr.truncated,
        reason=reason,
        node_id=ctx.settings.node_id,
    )
    if ctx.artifacts is not None:
        result.artifacts.CopyFrom(ctx.artifacts)
    if ctx.started_at is not None:
        result.started_at.CopyFrom(_timestamp(ctx.started_at))
    if ctx.ended_at is not None:
        result.ended_at.CopyFrom(_timestamp(ctx.ended_at))
    return result
