"""Warm inference pods: made while the node is idle, so an inference job only has to
create and start its sandbox in a pod whose proxy already answers.

Each pod is strictly single-use: `take` hands it to one job, whose pod hook removes it
with the job's other pieces; the pool never sees it again. The pool then makes a new
one (`fill`, which the pod hook calls once its sandbox has started, so the refill does
not compete with the job's own start). A pod is made for one set of pod settings (the
node id and the InferencePodSettings that shape the sidecar); `fill` or `take` with
other settings discards the pods made for the old ones. `close` (node stop) removes
every pod the pool holds; a node that died leaves them labelled with its id, and the
start-up cleanup removes them like any leftover.

Nothing job-specific goes into the sidecar (its command is the node's settings; the
job's model and ids go into the sandbox), so a pod made ahead of time serves any job.
Its pieces carry the node id, their role and the pool's id, not a job id (see
labels.warm_labels); the node logs which job took which pod.

A job never fails because of the pool: a pod that cannot be made, or that no longer
answers when taken, is removed and the job makes its own pod (cold), which reports
whatever is wrong.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import secrets

from podman import PodmanClient

from cynode.node.runtime.inference_pod import InferencePod
from cynode.node.runtime.labels import warm_labels
from cynode.node.runtime.settings import InferencePodSettings, SandboxSettings

log = logging.getLogger(__name__)

PoolKey = tuple[str, InferencePodSettings]


def pool_key(settings: SandboxSettings) -> PoolKey | None:
    """What a warm pod depends on; None for a node without inference. The default model
    only reaches the sandbox's env, so it does not make pods stale."""
    if settings.inference is None or not settings.node_id:
        return None
    return settings.node_id, dataclasses.replace(settings.inference, default_model="")


class WarmPodPool:
    def __init__(self, client: PodmanClient, size: int = 1) -> None:
        if size < 0:
            raise ValueError("a warm pool's size cannot be negative")
        self.client = client
        self.size = size
        self.pool_id = secrets.token_hex(4)
        self._serial = itertools.count(1)
        self._key: PoolKey | None = None
        self._ready: list[InferencePod] = []
        # In the making, for the key each was started with; a `take` may claim one.
        self._making: dict[asyncio.Task[InferencePod], PoolKey] = {}
        self._claimed: set[asyncio.Task[InferencePod]] = set()
        self._removals: set[asyncio.Task[None]] = set()
        self._closed = False
        self.made = 0
        self.taken = 0
        self.failed = 0

    @property
    def ready_count(self) -> int:
        return len(self._ready)

    def fill(self, settings: SandboxSettings) -> None:
        """Keeps `size` pods ready or in the making for these settings (in the
        background); pods made for other settings are discarded. A no-op for a node
        without inference, a pool of size 0, or a closed pool."""
        if self._closed or self.size == 0:
            return
        key = pool_key(settings)
        if key != self._key:
            self._discard_ready()
            self._key = key
        if key is None:
            return
        # Pods in the making for older settings will be removed when done: not counted.
        unclaimed = sum(
            1
            for task, made_for in self._making.items()
            if made_for == key and task not in self._claimed
        )
        for _ in range(self.size - len(self._ready) - unclaimed):
            self._start_making(key)

    async def take(self, settings: SandboxSettings) -> InferencePod | None:
        """A pod whose proxy answered just now, made for these settings, now the caller's
        alone to use and remove; None when there is none (then make one cold).

        With none ready but one in the making (the refill after the previous job), that
        one is waited for: it started earlier than a cold pod would, and two pods made
        at once would only slow each other down.
        """
        key = pool_key(settings)
        if self._closed or self.size == 0 or key is None:
            return None
        if key != self._key:
            self.fill(settings)
            return None
        while self._ready:
            pod = self._ready.pop(0)
            if await pod.answers():
                self.taken += 1
                return pod
            log.warning("warm pod %s no longer answers; removing it", pod.pod_name)
            self._remove_later(pod)
        for task, task_key in self._making.items():
            if task_key == key and task not in self._claimed:
                self._claimed.add(task)
                try:
                    pod = await asyncio.shield(task)
                except asyncio.CancelledError:
                    if task.cancelled():  # the pool was closed, not the caller cancelled
                        return None
                    # The caller gave up; its claim ends and the pod goes to the pool.
                    task.add_done_callback(self._unclaim)
                    raise
                except Exception:
                    return None  # already logged and removed by the maker
                finally:
                    if task.done():
                        self._claimed.discard(task)
                self.taken += 1
                return pod
        return None

    async def wait_filled(self) -> None:
        """Returns once no pod is in the making (tests, the benchmark: an idle node)."""
        while self._making:
            await asyncio.wait(set(self._making))

    async def close(self) -> None:
        """Stops making pods and removes every pod the pool holds (node stop)."""
        self._closed = True
        for task in self._making:
            task.cancel()
        if self._making:
            await asyncio.wait(set(self._making))
        self._discard_ready()
        if self._removals:
            await asyncio.wait(set(self._removals))

    # -- inside ---------------------------------------------------------------------

    def _start_making(self, key: PoolKey) -> None:
        node_id, settings = key
        stem = f"warm-{self.pool_id}-{next(self._serial)}"
        pod = InferencePod(
            self.client,
            settings,
            stem=stem,
            labels=lambda role: warm_labels(node_id, self.pool_id, role),
        )
        task = asyncio.create_task(self._make(pod), name=f"warm-{stem}")
        self._making[task] = key
        task.add_done_callback(self._made)

    async def _make(self, pod: InferencePod) -> InferencePod:
        try:
            await pod.create()
            pod.start_sidecar()
            await pod.wait_answering()
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                log.warning("could not make warm pod %s: %s", pod.pod_name, exc)
            # shield: a cancel (node stop) still removes what was made.
            await asyncio.shield(self._remove(pod))
            raise
        log.info("warm pod %s is ready", pod.pod_name)
        return pod

    def _made(self, task: asyncio.Task[InferencePod]) -> None:
        key = self._making.pop(task)
        if task.cancelled():
            return
        if task.exception() is not None:
            self.failed += 1
            return
        self.made += 1
        if task in self._claimed:
            return  # the claimer has it
        pod = task.result()
        if self._closed or key != self._key:
            self._remove_later(pod)
        else:
            self._ready.append(pod)

    def _unclaim(self, task: asyncio.Task[InferencePod]) -> None:
        # A claimer that gave up while the pod was in the making: nobody will use it.
        self._claimed.discard(task)
        if not task.cancelled() and task.exception() is None:
            self._remove_later(task.result())

    def _discard_ready(self) -> None:
        ready, self._ready = self._ready, []
        for pod in ready:
            self._remove_later(pod)

    def _remove_later(self, pod: InferencePod) -> None:
        task = asyncio.create_task(self._remove(pod), name=f"remove-{pod.pod_name}")
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)

    @staticmethod
    async def _remove(pod: InferencePod) -> None:
        try:
            await pod.remove()
        except Exception as exc:
            log.warning(
                "could not remove warm pod %s (%s); start-up cleanup will", pod.pod_name, exc
            )
