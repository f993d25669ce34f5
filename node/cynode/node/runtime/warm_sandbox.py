"""Warm single-use sandboxes for plain jobs (SPEC §4.10).

Per sandbox class (the node, the image and the limits: everything the container's
creation reads but the job), the pool keeps up to `sandbox.warm_containers` containers
created and started ahead of time with every sandbox rule (no network, uid 10000, caps
dropped, no-new-privileges, read-only root, tmpfs /tmp, limits, init), each with its
own workspace volume and running the image's waiting runner (images/sandbox/
cynode_warm.py), which blocks on stdin. The pool mechanics (refill after a take,
settings changes, close, single use) are warm_pool.py's.

A job whose class has one ready takes it: WarmSandboxHook replaces the workspace,
container and input-files hooks. The output hook attaches to the running container,
stdin included, and the handoff writes the job's manifest (command, env, script and
attachments) on that stdin in one write: the runner writes the files into /workspace
and execs the command, so the job is then the container's process and its exit code
and OOM kill are read as on the cold path. After that one job the container and its
volume are removed; they never go back to the pool. A job of another class (its own
image), or with none ready, takes the cold path.

The pool's size is bounded by the node's job slots (more could never run at once) and
by its memory (each container may use `memory_mb`; no more are kept than MemAvailable
holds); after `sandbox.warm_idle_seconds` without a job it lets them go until the next
job (which goes cold). Containers and volumes carry the warm labels (node, pool, role), so start-up
cleanup removes those of a node that died.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from podman import PodmanClient

from cynode.node.runtime import ops
from cynode.node.runtime.context import JobContext
from cynode.node.runtime.hooks import Hook
from cynode.node.runtime.labels import warm_labels
from cynode.node.runtime.output_hook import OutputAttach
from cynode.node.runtime.sandbox import sandbox_env, warm_create_kwargs
from cynode.node.runtime.settings import SandboxSettings
from cynode.node.runtime.warm_pool import WarmPool
from cynode.node.runtime.workspace_image import (
    RELEASE_WAIT_S,
    image_path,
    make_image,
    volume_options,
    wait_unmounted,
)

log = logging.getLogger(__name__)

# The waiting runner baked into the sandbox image (images/sandbox/cynode_warm.py).
WARM_RUNNER = "/usr/local/bin/cynode-warm"
# A job still running this long after its start gets its replacement made meanwhile.
REFILL_AFTER_S = 1.0


@dataclass(frozen=True)
class SandboxClass:
    """What a warm sandbox depends on: a change of any discards the pool's containers."""

    node_id: str
    image: str
    memory_mb: int
    cpus: float
    pids: int
    # The bounded workspace (SPEC §4.4): each warm sandbox's volume is an ext4 image too.
    workspace_mb: int = 0
    workspace_dir: str = ""
    userns: str = "auto"

    @property
    def label(self) -> str:
        """For metrics and the capability report: image and limits, readable."""
        return f"{self.image} mem={self.memory_mb}m cpus={self.cpus:g} pids={self.pids}"


def sandbox_class(settings: SandboxSettings) -> SandboxClass | None:
    if not settings.node_id:
        return None
    return SandboxClass(
        settings.node_id,
        settings.image,
        settings.memory_mb,
        settings.cpus,
        settings.pids,
        settings.workspace_mb,
        settings.workspace_dir,
        settings.userns,
    )


def available_memory_mb(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """MemAvailable in MiB; None when it cannot be read (then memory does not bound)."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


@dataclass
class WarmSandbox:
    """One warm container and its workspace volume, recorded as soon as each exists."""

    name: str
    volume_name: str
    container_id: str | None = None
    volume_created: bool = False
    # The bounded workspace's ext4 image, when workspaces are bounded.
    image: Path | None = None
    # Attached (stdout, stderr and stdin) as soon as it runs: the job's handoff then
    # costs no round trip to Podman, and a stream that has ended tells a dead one.
    attach: OutputAttach | None = None


class WarmSandboxPool(WarmPool[SandboxClass, WarmSandbox]):
    kind = "sandbox"

    def __init__(
        self,
        client: PodmanClient,
        size: int = 2,
        *,
        max_jobs: int | None = None,
        memory_mb: Callable[[], int | None] = available_memory_mb,
        idle_s: float = 0,
    ) -> None:
        super().__init__(client, size, idle_s=idle_s)
        self.max_jobs = max_jobs
        self._memory_mb = memory_mb

    def key_of(self, settings: SandboxSettings) -> SandboxClass | None:
        return sandbox_class(settings)

    def target(self, key: SandboxClass) -> int:
        want = self.size if self.max_jobs is None else min(self.size, self.max_jobs)
        free = self._memory_mb()
        if free is not None:
            # What is kept already counts: its memory is (mostly) not used until a job runs.
            kept = self.ready_count + len(self._making)
            want = min(want, kept + free // max(key.memory_mb, 1))
        return max(want, 0)

    def matches(self, settings: SandboxSettings, image: str) -> bool:
        """A job with this image (empty: the node's) is of the pool's class."""
        return not image or image == settings.image

    async def make(self, key: SandboxClass, stem: str) -> WarmSandbox:
        item = WarmSandbox(name=f"cynode-job-{stem}", volume_name=f"cynode-ws-{stem}")
        settings = SandboxSettings(
            image=key.image,
            memory_mb=key.memory_mb,
            cpus=key.cpus,
            pids=key.pids,
            node_id=key.node_id,
            workspace_mb=key.workspace_mb,
            workspace_dir=key.workspace_dir,
            userns=key.userns,
        )
        client = self.client
        item.image = image_path(key.workspace_mb, key.workspace_dir, item.volume_name)

        def create_and_start() -> None:
            labels = warm_labels(key.node_id, self.pool_id, "workspace")
            if item.image is None:
                client.volumes.create(item.volume_name, labels=labels)
            else:
                make_image(item.image, key.workspace_mb)
                client.volumes.create(
                    item.volume_name,
                    labels=labels,
                    driver="local",
                    driver_opts=volume_options(item.image),
                )
            item.volume_created = True
            kwargs = warm_create_kwargs(
                settings,
                command=[WARM_RUNNER],
                name=item.name,
                volume_name=item.volume_name,
                labels=warm_labels(key.node_id, self.pool_id, "sandbox"),
            )
            item.container_id = str(client.containers.create(**kwargs).id)
            ops.start_container(client, item.container_id)
            attach = OutputAttach(client, item.container_id, stdin=True)
            attach.open()
            item.attach = attach

        making = asyncio.ensure_future(asyncio.to_thread(create_and_start))
        try:
            await asyncio.shield(making)
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                log.warning("could not make warm sandbox %s: %s", item.name, exc)
            # The thread runs on after a cancel: let it record what it made, then remove.
            await asyncio.wait({making})
            await asyncio.shield(self._remove_quietly(item))
            raise
        log.debug("warm sandbox %s is ready", item.name)
        return item

    async def usable(self, item: WarmSandbox) -> bool:
        if item.container_id is None:
            return False
        if item.attach is not None:
            # Its runner says nothing before a job: a stream still open and silent is a
            # container still waiting (no inspect on the job's critical path).
            return item.attach.quiet()
        try:
            state = await asyncio.to_thread(ops.container_state, self.client, item.container_id)
        except Exception:
            return False
        return bool(state.get("Running"))

    async def remove(self, item: WarmSandbox) -> None:
        if item.attach is not None:
            item.attach.close()
            item.attach = None
        if item.container_id is not None:
            await asyncio.to_thread(ops.remove_container, self.client, item.container_id)
            item.container_id = None
        if item.volume_created:
            await asyncio.to_thread(ops.remove_volume, self.client, item.volume_name)
            item.volume_created = False
        if item.image is not None:
            await asyncio.to_thread(wait_unmounted, item.image, RELEASE_WAIT_S)
            await asyncio.to_thread(item.image.unlink, True)

    def name(self, item: WarmSandbox) -> str:
        return item.name

    def describe(self, key: SandboxClass) -> tuple[str, str]:
        return key.label, key.image


def manifest(ctx: JobContext) -> bytes:
    """The one line the waiting runner reads: the job's command, env and files."""
    assert ctx.plan is not None
    env = sandbox_env(ctx.spec)
    env.update(ctx.extra_env)
    files = [
        {"name": f.name, "mode": f.mode, "data": base64.b64encode(f.content).decode()}
        for f in ctx.plan.files
    ]
    body = {"argv": ctx.plan.command, "env": env, "files": files, "report": ctx.report_nonce}
    # ASCII only: no raw control byte reaches the attach stream's stdin.
    return json.dumps(body, ensure_ascii=True, separators=(",", ":")).encode() + b"\n"


class WarmSandboxHook(Hook):
    """The job's sandbox is a warm one: handed the job at the start, removed after it."""

    name = "warm-sandbox"

    def __init__(self, sandbox: WarmSandbox, pool: WarmSandboxPool) -> None:
        self.sandbox = sandbox
        self.pool = pool
        self._refill: asyncio.TimerHandle | None = None

    async def prestart(self, ctx: JobContext) -> None:
        log.info("job %s: runs in warm sandbox %s", ctx.spec.job_id, self.sandbox.name)
        ctx.container_id = self.sandbox.container_id
        ctx.container_name = self.sandbox.name
        ctx.volume_name = self.sandbox.volume_name
        ctx.attach_stdin = True
        ctx.attached = self.sandbox.attach
        # The runner frames the job's output and reports its end with this (the job
        # never sees it): the node learns the end at the process's exit.
        ctx.report_nonce = secrets.token_hex(16)
        ctx.handoff = lambda: self.handoff(ctx)

    async def handoff(self, ctx: JobContext) -> None:
        send = ctx.send_stdin
        if send is None:
            raise RuntimeError("the warm sandbox's stdin is not attached")
        await asyncio.to_thread(send, manifest(ctx))

    async def poststart(self, ctx: JobContext) -> None:
        # The replacement: with another one at hand for the next job, made after a short
        # job's result is out (poststop), so that Podman's work on it does not slow the
        # job and its result down; a job that runs longer gets it made meanwhile. With
        # none left (jobs coming back to back), made now: the next job waits for it
        # rather than going cold.
        if self.pool.ready_count == 0:
            self.pool.fill(ctx.settings)
            return
        loop = asyncio.get_running_loop()
        self._refill = loop.call_later(REFILL_AFTER_S, self.pool.fill, ctx.settings)

    async def poststop(self, ctx: JobContext) -> None:
        if self._refill is not None:
            self._refill.cancel()
        # Asked for first (fill only starts the making), then this one goes: used
        # once, removed, never returned to the pool.
        self.pool.fill(ctx.settings)
        await self.pool.remove(self.sandbox)
