"""JobRunner: runs one job in a sandbox container by sequencing small hooks.

One JobRunner per job attempt (the kubelet pod-worker idea: one owner per job). `run`
never raises for a job's own failure or a runtime error; both become a JobResult.

The result is complete once the sandbox has exited and its output is in; removing the
containers, pod and volumes (the hooks' poststop) can take longer than the job itself
(an inference pod: ~140 ms). With `background_release`, `run` returns the result as
soon as it is complete, and the removal begins when the caller first awaits
`released()`, which returns once it is done: the node first gets the result to the
orchestrator, so Podman's work on the removal (and a warm sandbox's refill) does not
compete with it for the CPU. The caller then owns that wait: the node keeps the job's
slot until it returns and awaits it before stopping (job_worker.py, dispatch.py).
Without it (the default), `run` returns only once everything is removed, and
`released()` at once.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from podman import PodmanClient

from cynode.jobs.v1 import job_pb2
from cynode.node.runtime import ops
from cynode.node.runtime.artifacts_hook import ArtifactsHook
from cynode.node.runtime.container_hook import ContainerHook
from cynode.node.runtime.context import JobContext, OnOutput, OnStarted, StopKind
from cynode.node.runtime.hooks import Hook
from cynode.node.runtime.inputs import UnsupportedJob, plan_job
from cynode.node.runtime.inputs_hook import InputFilesHook
from cynode.node.runtime.output_hook import OutputHook
from cynode.node.runtime.pod_hook import InferencePodHook, ProxyReadyHook
from cynode.node.runtime.result import build_result, short_error
from cynode.node.runtime.settings import SandboxSettings, effective_timeout
from cynode.node.runtime.threads import in_thread
from cynode.node.runtime.timeout_hook import TimeoutHook
from cynode.node.runtime.warm_pool import WarmPodPool
from cynode.node.runtime.warm_sandbox import WarmSandbox, WarmSandboxHook, WarmSandboxPool
from cynode.node.runtime.workspace_hook import WorkspaceHook

log = logging.getLogger(__name__)


def _retrieve(future: asyncio.Future[int]) -> None:
    if not future.cancelled():
        future.exception()


class JobRunner:
    def __init__(
        self,
        client: PodmanClient,
        settings: SandboxSettings,
        *,
        on_output: OnOutput | None = None,
        on_started: OnStarted | None = None,
        warm_pods: WarmPodPool | None = None,
        warm_sandboxes: WarmSandboxPool | None = None,
        background_release: bool = False,
    ) -> None:
        self._client = client
        self._settings = settings
        self._on_output = on_output
        self._on_started = on_started
        self._warm_pods = warm_pods
        self._warm_sandboxes = warm_sandboxes
        # "warm" when the job ran in a warm sandbox, "cold" when it made its own.
        self.path = ""
        self._background_release = background_release
        self._ctx: JobContext | None = None
        self._early_cancel: str | None = None
        self._release: asyncio.Task[None] | None = None
        # Opened by released(): a background release waits for it before removing.
        self._release_gate = asyncio.Event()

    @property
    def container_id(self) -> str | None:
        """The job's sandbox container, once it has one (it is removed after the job)."""
        return self._ctx.container_id if self._ctx is not None else None

    def make_hooks(
        self, needs_inference: bool = False, warm: WarmSandbox | None = None
    ) -> list[Hook]:
        """The hooks, in prestart order; a job that needs inference gets the pod hook (a
        warm pod, or the proxy host's child for a sandbox alone, pod_hook.py) first,
        one handed a warm sandbox (SPEC §4.10) only output, timeout and artifacts beside it.

        Raises UnsupportedJob when the job needs inference and this node has none.
        """
        if warm is not None:
            assert self._warm_sandboxes is not None
            return [
                WarmSandboxHook(warm, self._warm_sandboxes),
                OutputHook(),
                TimeoutHook(),
                ArtifactsHook(),
            ]
        if not needs_inference:
            return [
                WorkspaceHook(),
                ContainerHook(),
                InputFilesHook(),
                OutputHook(),
                TimeoutHook(),
                ArtifactsHook(),
            ]
        if self._settings.inference is None:
            raise UnsupportedJob("this node offers no inference (prompt/use_inference job)")
        pod = InferencePodHook(self._settings.inference, self._warm_pods)
        return [
            WorkspaceHook(),
            pod,
            ContainerHook(),
            InputFilesHook(),
            ProxyReadyHook(pod),
            OutputHook(),
            TimeoutHook(),
            ArtifactsHook(),
        ]

    async def run(self, spec: job_pb2.JobSpec) -> job_pb2.JobResult:
        """Run the job to its end. Everything it made is gone on return, unless the
        runner releases in the background: then await `released()` for that."""
        if self._ctx is not None:
            raise RuntimeError("a JobRunner runs one job; make a new one per attempt")
        ctx = JobContext(
            spec=spec,
            settings=self._settings,
            client=self._client,
            timeout_s=effective_timeout(spec.timeout_seconds, self._settings),
            on_output=self._on_output,
        )
        self._ctx = ctx
        if self._early_cancel is not None:
            ctx.stop_kind, ctx.stop_reason = StopKind.CANCEL, self._early_cancel
        hooks: list[Hook] = []
        error: str | None = None
        try:
            ctx.plan = plan_job(spec)
            warm = await self._take_warm(ctx)
            # A job cancelled before it began has no path: it never gets a sandbox.
            self.path = "warm" if warm is not None else "" if ctx.stop_kind else "cold"
            hooks = self.make_hooks(ctx.plan.needs_inference, warm)
            await self._run_hooks(ctx, hooks)
        except UnsupportedJob as exc:
            error = f"error: {exc}"
        except Exception as exc:
            log.exception("job %s: runtime error", spec.job_id)
            error = short_error(exc)
        except BaseException:
            # Cancelled (the node stops): nobody will await released(), so release now.
            ctx.ended_at = ctx.ended_at or datetime.now(UTC)
            self._start_release(ctx, hooks)
            await self.released()
            raise
        ctx.ended_at = ctx.ended_at or datetime.now(UTC)
        # Nothing the poststop hooks do changes the result: it is built first.
        result = build_result(ctx, error)
        self._start_release(ctx, hooks)
        if not self._background_release:
            await self.released()
        log.info(
            "job %s attempt %d: status %s reason %r exit %d",
            spec.job_id,
            spec.attempt,
            job_pb2.JobStatus.Name(result.status),
            result.reason,
            result.exit_code,
        )
        return result

    async def _take_warm(self, ctx: JobContext) -> WarmSandbox | None:
        """A warm sandbox of the job's class, when the node keeps them and one is ready."""
        pool = self._warm_sandboxes
        assert ctx.plan is not None
        if pool is None or ctx.plan.needs_inference or ctx.stop_kind is not None:
            return None
        if not pool.matches(ctx.settings, ctx.spec.image):
            pool.note_miss()
            return None
        return await pool.take(ctx.settings)

    async def _run_hooks(self, ctx: JobContext, hooks: list[Hook]) -> None:
        for hook in hooks:
            if ctx.stop_kind is not None:
                return
            await hook.prestart(ctx)
        if ctx.stop_kind is not None:
            return
        assert ctx.container_id is not None
        container_id = ctx.container_id
        if ctx.handoff is not None:
            await ctx.handoff()  # a warm sandbox runs already: the job starts now
        else:
            await asyncio.to_thread(ops.start_container, self._client, container_id)
        ctx.started_at = datetime.now(UTC)
        # A cancel that came while the container was starting could not stop it yet.
        if ctx.stop_kind is not None:
            await ctx.stop_container()
        for hook in hooks:
            await hook.poststart(ctx)
        if self._on_started is not None:
            try:
                await self._on_started(ctx.started_at)
            except Exception:
                log.exception("on_started failed for job %s", ctx.spec.job_id)
        state = await self._wait_exit(ctx, container_id)
        ctx.ended_at = datetime.now(UTC)
        ctx.exited = True
        ctx.exit_code = state.exit_code
        ctx.oom_killed = state.oom_killed
        for hook in hooks:
            await hook.exited(ctx)

    async def _wait_exit(self, ctx: JobContext, container_id: str) -> ops.ExitState:
        """The job's exit state: the warm sandbox runner's report of it (SPEC §4.10), or
        the container's, as soon as Podman has recorded it.

        Podman's wait answers up to 250 ms (often more) after the exit; the end of the
        output stream comes right after it, so when that comes first, the state is read
        directly. Podman's wait stays the fallback (no output hook, a stream that broke).
        """
        client = self._client
        waiter = in_thread(
            lambda: ops.wait_container(client, container_id), name=f"wait-{container_id[:12]}"
        )
        closed = asyncio.ensure_future(ctx.output_closed.wait())
        ended = asyncio.ensure_future(ctx.process_ended.wait())
        either: list[asyncio.Future[Any]] = [waiter, closed, ended]
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            ended.cancel()
        # A stop (cancel, timeout) in progress finishes first: whoever asked for it sees
        # the container stopped, not already removed, when it returns.
        await ctx.stop_settled()
        reported = ctx.reported_end
        # A warm sandbox's runner saw the process exit: no need to wait for Podman to
        # record the container's stop, unless a kill (137) may have been an OOM kill
        # the runner could not tell (no readable OOM counter): Podman knows.
        if reported is not None and (reported.oom is not None or reported.exit_code != 137):
            waiter.add_done_callback(_retrieve)
            return ops.ExitState(reported.exit_code, bool(reported.oom))
        if not waiter.done():
            state = await asyncio.to_thread(ops.ended_state, client, container_id)
            if state is not None:
                # The abandoned wait ends by itself soon (or fails once the container is
                # removed); its outcome is retrieved so asyncio does not report it lost.
                waiter.add_done_callback(_retrieve)
                return state
        exit_code = await waiter
        state = await asyncio.to_thread(ops.exit_state, client, container_id)
        return ops.ExitState(exit_code if exit_code >= 0 else state.exit_code, state.oom_killed)

    def _start_release(self, ctx: JobContext, hooks: list[Hook]) -> None:
        self._release = asyncio.create_task(
            self._release_all(ctx, hooks), name=f"release-{ctx.spec.job_id}"
        )

    async def released(self) -> None:
        """Returns once everything the job made is removed (or a removal failed and was
        logged; start-up cleanup removes what is left). A waiter that is cancelled
        leaves the removal running."""
        self._release_gate.set()
        if self._release is not None:
            await asyncio.shield(self._release)

    async def _release_all(self, ctx: JobContext, hooks: list[Hook]) -> None:
        if self._background_release:
            await self._release_gate.wait()
        for hook in reversed(hooks):
            try:
                await hook.poststop(ctx)
            except Exception:
                # Keep releasing the rest; cleanup at node start removes what is left.
                log.exception("job %s: %s hook failed to clean up", ctx.spec.job_id, hook.name)

    async def cancel(self, reason: str = "canceled") -> None:
        """Stop the job: the container gets SIGTERM, SIGKILL after 1 s; returns once it
        has stopped. The result is CANCELED with this reason. A cancel before `run`
        makes `run` return CANCELED without creating anything; after the end, a no-op.
        """
        if self._ctx is None:
            self._early_cancel = self._early_cancel or reason
            return
        await self._ctx.request_stop(StopKind.CANCEL, reason)
