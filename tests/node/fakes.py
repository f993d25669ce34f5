"""A scripted stand-in for the sandbox runner (the real one is tested in
tests/node/runtime/ and end to end in test_podman_e2e.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from cynode.jobs.v1 import job_pb2
from cynode.node.job_worker import OnOutput, OnStarted


class ScriptedRunner:
    """Starts, prints `output`, then waits for `release` (or a cancel) and finishes;
    `released()` then waits for `removed` (set at once unless `hold_removal`)."""

    instances: list[ScriptedRunner] = []

    def __init__(
        self,
        on_output: OnOutput,
        on_started: OnStarted,
        *,
        output: bytes = b"hello\n",
        hold: bool = False,
        fail: Exception | None = None,
        hold_removal: bool = False,
    ) -> None:
        self.on_output = on_output
        self.on_started = on_started
        self.output = output
        self.release = asyncio.Event()
        if not hold:
            self.release.set()
        self.fail = fail
        self.removed = asyncio.Event()
        if not hold_removal:
            self.removed.set()
        self.cancels: list[str] = []
        # Set when the node first awaits released() (the removal would begin then).
        self.release_asked = asyncio.Event()
        self.cancelled_by_task = False
        self.started = asyncio.Event()
        self.path = "cold"
        ScriptedRunner.instances.append(self)

    async def run(self, spec: job_pb2.JobSpec) -> job_pb2.JobResult:
        started = datetime.now(UTC)
        await self.on_started(started)
        self.started.set()
        if self.fail is not None:
            raise self.fail
        await self.on_output("stdout", self.output, 0)
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled_by_task = True
            raise
        result = job_pb2.JobResult(
            job_id=spec.job_id,
            attempt=spec.attempt,
            status=job_pb2.JOB_STATUS_COMPLETED,
            exit_code=0,
            stdout=self.output,
        )
        if self.cancels:
            result.status = job_pb2.JOB_STATUS_CANCELED
            result.reason = "canceled"
            result.exit_code = 137
        result.started_at.FromDatetime(started)
        result.ended_at.FromDatetime(datetime.now(UTC))
        return result

    async def cancel(self, reason: str = "canceled") -> None:
        self.cancels.append(reason)
        self.release.set()

    async def released(self) -> None:
        self.release_asked.set()
        await self.removed.wait()
