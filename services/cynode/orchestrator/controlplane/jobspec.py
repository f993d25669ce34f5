"""JobSpec messages built from a task row and its attachments."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from cynode.jobs.v1 import job_pb2

INPUT_MODES = {
    "prompt": job_pb2.INPUT_MODE_PROMPT,
    "script": job_pb2.INPUT_MODE_SCRIPT,
    "commands": job_pb2.INPUT_MODE_COMMANDS,
}


class TaskFields(Protocol):
    """The task columns a spec needs (a result row, read by attribute)."""

    @property
    def id(self) -> str: ...
    @property
    def input_mode(self) -> str: ...
    @property
    def prompt(self) -> str | None: ...
    @property
    def script(self) -> str | None: ...
    @property
    def commands(self) -> list[str] | None: ...
    @property
    def use_inference(self) -> bool: ...
    @property
    def timeout_seconds(self) -> int | None: ...
    @property
    def image(self) -> str | None: ...


def build_spec(
    job_id: str,
    attempt: int,
    needs_inference: bool,
    task: TaskFields | Any,
    attachments: Iterable[tuple[str, bytes]],
) -> job_pb2.JobSpec:
    spec = job_pb2.JobSpec(
        job_id=job_id,
        task_id=task.id,
        attempt=attempt,
        input_mode=INPUT_MODES.get(task.input_mode, job_pb2.INPUT_MODE_UNSPECIFIED),
        prompt=task.prompt or "",
        script=task.script or "",
        commands=task.commands or (),
        use_inference=bool(task.use_inference or needs_inference),
        timeout_seconds=int(task.timeout_seconds or 0),
        image=task.image or "",
    )
    for name, content in attachments:
        spec.attachments.add(name=name, content=content)
    return spec
