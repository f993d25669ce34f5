"""Store rows rendered as API messages. Output bytes are decoded as UTF-8 with
replacement: a byte cap may cut a character in half, and that must not fail a read."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from cynode.gateway.v1 import tasks_pb2
from cynode.orchestrator.store import Job, JobOutputChunk, Task


def timestamp(when: datetime | None) -> Timestamp | None:
    if when is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


def decode_output(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def task_message(task: Task, attachments: Iterable[str] = ()) -> tasks_pb2.Task:
    return tasks_pb2.Task(
        task_id=task.id,
        task_name=task.name,
        status=task.status,
        input_mode=task.input_mode,
        created_at=timestamp(task.created_at),
        updated_at=timestamp(task.updated_at),
        use_inference=task.use_inference,
        reason=task.reason or "",
        user_id=task.user_id,
        attachments=list(attachments),
    )


def job_view(job: Job) -> tasks_pb2.JobView:
    return tasks_pb2.JobView(
        id=job.id,
        status=job.status,
        exit_code=job.exit_code or 0,
        stdout=decode_output(job.stdout),
        stderr=decode_output(job.stderr),
        truncated=tasks_pb2.Truncation(stdout=job.stdout_truncated, stderr=job.stderr_truncated),
        started_at=timestamp(job.started_at),
        ended_at=timestamp(job.ended_at),
        node_id=job.node_id or "",
        attempt=job.attempt,
        reason=job.reason or "",
    )


def assemble_chunks(chunks: Iterable[JobOutputChunk], start: int = 0) -> tuple[bytes, int]:
    """Joins chunks (sorted by offset) into the bytes from `start` on; overlapping
    resends are dropped. Returns the bytes and the offset just past them."""
    out = bytearray()
    pos = start
    for chunk in sorted(chunks, key=lambda c: c.offset):
        end = chunk.offset + len(chunk.data)
        if end <= pos:
            continue
        out += chunk.data[max(0, pos - chunk.offset) :]
        pos = end
    return bytes(out), pos
