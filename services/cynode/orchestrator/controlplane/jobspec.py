"""JobSpec messages built from a task row and its attachments."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from cynode.jobs.v1 import job_pb2

INPUT_MODES = {
    "prompt": job_pb2.INPUT_MODE_PROMPT,
    "script": job_pb2.INPUT_MODE_SCRIPT,
    "commands": job_pb2.INPUT_MODE_COMMANDS,
}


class TaskFields(NamedTuple):
    """The task columns a spec needs, read with the claim."""

    id: str
    input_mode: str
    prompt: str | None
    script: str | None
    commands: list[str] | None
    use_inference: bool
    timeout_seconds: int | None
    image: str | None


def build_spec(
    spec: job_pb2.JobSpec,
    job_id: str,
    attempt: int,
    needs_inference: bool,
    task: TaskFields,
    attachments: Iterable[tuple[str, bytes]],
) -> job_pb2.JobSpec:
    """Fills `spec` (an empty JobSpec, usually one inside the JobAssignment about to be
    sent) and returns it."""
    spec.job_id = job_id
    spec.task_id = task.id
    spec.attempt = attempt
    spec.input_mode = INPUT_MODES.get(task.input_mode, job_pb2.INPUT_MODE_UNSPECIFIED)
    if task.prompt:
        spec.prompt = task.prompt
    if task.script:
        spec.script = task.script
    if task.commands:
        spec.commands.extend(task.commands)
    spec.use_inference = bool(task.use_inference or needs_inference)
    spec.timeout_seconds = int(task.timeout_seconds or 0)
    if task.image:
        spec.image = task.image
    for name, content in attachments:
        spec.attachments.add(name=name, content=content)
    return spec
