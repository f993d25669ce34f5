"""One asyncio task per job, owning that job's state (the kubelet pod-worker idea).

The worker runs the sandbox runner, forwards its start and output to the sink, and
hands the final result to the sink as soon as it is complete; then it waits until the
runner has removed what the job made and tells the sink the job's slot is free. A
cancel goes through the worker's inbox, never around it, so a cancel racing the end of
the job is handled in one place.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol

from google.protobuf.timestamp_pb2 import Timestamp

from cynode.jobs.v1 import job_pb2

log = logging.getLogger(__name__)

OnOutput = Callable[[str, bytes, int], Awaitable[None]]
OnStarted = Callable[[datetime], Awaitable[None]]
JobKey = tuple[str, int]


class Runner(Protocol):
    # "warm" when the job was handed to a warm sandbox, "cold" when it made its own
    # ("" before the run, or when it never got a sandbox).
    path: str

    async def run(self, spec: job_pb2.JobSpec) -> job_pb2.JobResult: ...

    async def cancel(self, reason: str = "canceled") -> None: ...

    async def released(self) -> None:
        """Returns once everything the job made is removed (may be after `run`)."""
        ...


RunnerFactory = Callable[[OnOutput, OnStarted], Runner]


class JobSink(Protocol):
    async def job_started(self, worker: JobWorker, started_at: datetime) -> None: ...

    async def job_output(
        self, worker: JobWorker, stream: str, data: bytes, offset: int
    ) -> None: ...

    async def job_finished(self, worker: JobWorker, result: job_pb2.JobResult) -> None: ...

    async def result_delivered(self, worker: JobWorker) -> None:
        """After job_finished: returns once the orchestrator has acknowledged the result,
        or after a short bound (a stream down must not hold the job's slot)."""
        ...

    async def job_released(self, worker: JobWorker) -> None:
        """After job_finished, once the job's containers, pod and volumes are removed."""
        ...


def _ts(moment: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(moment)
    return ts


def error_result(spec: job_pb2.JobSpec, detail: str, started: datetime) -> job_pb2.JobResult:
    return job_pb2.JobResult(
        job_id=spec.job_id,
        attempt=spec.attempt,
        status=job_pb2.JOB_STATUS_FAILED,
        exit_code=-1,
        reason="error",
        stderr=detail.encode(),
        started_at=_ts(started),
        ended_at=_ts(datetime.now(UTC)),
    )


class JobWorker:
    def __init__(
        self, spec: job_pb2.JobSpec, runner_factory: RunnerFactory, sink: JobSink, node_id: str
    ) -> None:
        self.spec = spec
        self.key: JobKey = (spec.job_id, spec.attempt)
        self.node_id = node_id
        self._factory = runner_factory
        self._sink = sink
        self._inbox: asyncio.Queue[str] = asyncio.Queue()
        self.task: asyncio.Task[job_pb2.JobResult] | None = None
        self.runner: Runner | None = None
        self.started_at: datetime | None = None
        self.cancel_reason = ""
        self.accepted_wall = datetime.now(UTC)

    def start(self) -> asyncio.Task[job_pb2.JobResult]:
        self.task = asyncio.create_task(self._main(), name=f"job-{self.spec.job_id}")
        return self.task

    def cancel(self, reason: str = "canceled") -> None:
        self._inbox.put_nowait(reason or "canceled")

    async def _on_started(self, started_at: datetime) -> None:
        self.started_at = started_at
        await self._sink.job_started(self, started_at)

    async def _on_output(self, stream: str, data: bytes, offset: int) -> None:
        await self._sink.job_output(self, stream, data, offset)

    async def _main(self) -> job_pb2.JobResult:
        accepted = datetime.now(UTC)
        runner: Runner | None = None
        try:
            runner = self._factory(self._on_output, self._on_started)
            self.runner = runner
            result = await self._supervise(runner)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("job %s attempt %s: runner failed", *self.key)
            result = error_result(self.spec, f"node error: {type(exc).__name__}: {exc}", accepted)
        # The result always names this attempt and this node, whatever the runner filled.
        result.job_id, result.attempt = self.key
        if self.node_id and not result.node_id:
            result.node_id = self.node_id
        await self._sink.job_finished(self, result)
        # The removal (and a warm sandbox's refill) waits until the orchestrator has the
        # result: on a busy machine Podman's work would otherwise slow its delivery.
        await self._sink.result_delivered(self)
        if runner is not None:
            try:
                await runner.released()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("job %s attempt %s: release failed", *self.key)
        await self._sink.job_released(self)
        return result

    async def _supervise(self, runner: Runner) -> job_pb2.JobResult:
        run = asyncio.create_task(runner.run(self.spec))
        try:
            while True:
                next_cancel = asyncio.create_task(self._inbox.get())
                done, _ = await asyncio.wait(
                    {run, next_cancel}, return_when=asyncio.FIRST_COMPLETED
                )
                if run in done:
                    next_cancel.cancel()
                    return run.result()
                if not self.cancel_reason:
                    self.cancel_reason = next_cancel.result()
                    await runner.cancel(self.cancel_reason)
        finally:
            if not run.done():
                # Only on node shutdown: the runner stops its container itself.
                run.cancel()
