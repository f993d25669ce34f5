"""The state of one job run, shared by the runner and its hooks."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from podman import PodmanClient

from cynode.jobs.v1 import job_pb2
from cynode.node.runtime import ops
from cynode.node.runtime.inputs import JobPlan
from cynode.node.runtime.output import OutputCapture, RunnerEnd
from cynode.node.runtime.sandbox import STOP_TIMEOUT_S, object_name
from cynode.node.runtime.settings import SandboxSettings

if TYPE_CHECKING:
    from cynode.node.runtime.output_hook import OutputAttach

log = logging.getLogger(__name__)

OnOutput = Callable[[str, bytes, int], Awaitable[None]]
OnStarted = Callable[[datetime], Awaitable[None]]


class StopKind(Enum):
    TIMEOUT = "timeout"
    CANCEL = "cancel"


@dataclass
class JobContext:
    spec: job_pb2.JobSpec
    settings: SandboxSettings
    client: PodmanClient
    timeout_s: int
    on_output: OnOutput | None = None
    plan: JobPlan | None = None
    container_name: str = ""
    volume_name: str = ""
    container_id: str | None = None
    volume_created: bool = False
    # Set by the inference pod hook for a warm pod; the container hook puts the sandbox
    # into it (a cold inference job has none: its sandbox runs alone, job_proxy.py).
    pod_id: str | None = None
    # Also the pod hook's: done once the pod's first member (the sidecar) has started it.
    # Initialising the sandbox joins the pod's namespaces, which needs its infra running.
    pod_started: asyncio.Future[str] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    extra_volumes: dict[str, dict[str, Any]] = field(default_factory=dict)
    # When the container hook's steps ended (time.monotonic()), for a hook's step log.
    marks: dict[str, float] = field(default_factory=dict)
    started_at: datetime | None = None
    ended_at: datetime | None = None
    exited: bool = False
    exit_code: int | None = None
    oom_killed: bool = False
    stop_kind: StopKind | None = None
    stop_reason: str = ""
    # What the artifacts hook collected from /workspace/out/ (None: nothing was).
    artifacts: job_pb2.ArtifactSet | None = None
    output: OutputCapture = field(init=False)
    # Set by the output hook when the container's output streams end: the container has
    # (almost certainly) exited, so the runner may look for its exit state right away.
    output_closed: asyncio.Event = field(init=False, default_factory=asyncio.Event)
    # Set by a hook that removes the sandbox container along with something bigger (the
    # inference pod): the container hook lets it finish instead of racing it.
    container_removal: asyncio.Future[None] | None = None
    # Set by the warm sandbox hook: the container runs already, waiting for its job, and
    # this hands the job over (the runner calls it instead of starting the container).
    handoff: Callable[[], Awaitable[None]] | None = None
    # Also the warm sandbox hook's: the output hook attaches to stdin too, and sets
    # send_stdin (blocking; call it on a thread) to write to the container's stdin.
    attach_stdin: bool = False
    send_stdin: Callable[[bytes], None] | None = None
    # Also the warm sandbox hook's: the runner in the sandbox reports the job's end
    # itself, in frames proved by this nonce (output.RunnerStream); the output hook
    # records the end here and sets process_ended the moment it is read.
    report_nonce: str = ""
    # And the attach stream the warm sandbox opened when it was made (stdin included).
    attached: OutputAttach | None = None
    reported_end: RunnerEnd | None = None
    process_ended: asyncio.Event = field(init=False, default_factory=asyncio.Event)
    _stop_lock: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self.output = OutputCapture(self.settings.max_output_bytes)
        # A random suffix keeps a retried or re-dispatched attempt from clashing with a
        # leftover of the same name.
        suffix = secrets.token_hex(3)
        self.container_name = self.container_name or object_name("job", self.spec, suffix)
        self.volume_name = self.volume_name or object_name("ws", self.spec, suffix)

    def report_end(self, end: RunnerEnd) -> None:
        if self.reported_end is None:
            self.reported_end = end
            self.process_ended.set()

    @property
    def running(self) -> bool:
        return self.started_at is not None and not self.exited

    async def request_stop(self, kind: StopKind, reason: str) -> None:
        """Record why the job ends early (first request wins) and stop its container.

        Returns once the container has stopped (SIGTERM, SIGKILL after STOP_TIMEOUT_S).
        Before the container runs, only the reason is recorded; the runner checks it
        right after starting the container and before each preparation step.
        """
        if self.stop_kind is None and not self.exited:  # a finished job keeps its outcome
            self.stop_kind, self.stop_reason = kind, reason
        await self.stop_container()

    async def stop_settled(self) -> None:
        """Returns once no stop of the container is in progress."""
        async with self._stop_lock:
            return

    async def stop_container(self) -> None:
        if not self.running or self.container_id is None:
            return
        async with self._stop_lock:
            if self.running:
                log.info("stopping job %s (%s)", self.spec.job_id, self.stop_reason)
                await asyncio.to_thread(
                    ops.stop_container, self.client, self.container_id, STOP_TIMEOUT_S
                )
