"""Warm pools: sandbox pieces made while the node is idle, each used by one job only.

`WarmPool` holds the mechanics; a subclass says what one warm item is and how it is made,
checked and removed. Two kinds use it:

- `WarmPodPool` (here): inference pods, so an inference job only has to create and start
  its sandbox in a pod whose proxy already answers;
- `WarmSandboxPool` (warm_sandbox.py): sandbox containers of plain jobs, created and
  started with every sandbox rule, each running the waiting runner (SPEC §4.10).

Each item is strictly single-use: `take` hands it to one job, whose hooks remove it with
the job's other pieces; the pool never sees it again. The pool then makes a new one
(`fill`, which the job's hook calls once its sandbox has started, so the refill does not
compete with the job's own start). Items are made for one key (what they depend on:
the node id and the settings that shape them); `fill` or `take` with settings of
another key discards the items made for the old one. `close` (node stop) removes
every item the pool holds; a node that died leaves them labelled with its id, and the
start-up cleanup removes them like any leftover. With `idle_s`, a pool that no job
has asked for that long lets its items go and makes none until the next `take`
(which then misses: that job goes cold, and the pool fills again for the next).

Nothing job-specific goes into a warm item (for a pod, the sidecar's command is the
node's settings and the job's model goes into the sandbox; for a sandbox, the job's
command, env and files are handed over at the start), so an item made ahead of time
serves any job of its key. Its pieces carry the node id, their role and the pool's id,
not a job id (see labels.warm_labels); the node logs which job took which item.

A job never fails because of the pool: an item that cannot be made, or that is no
longer usable when taken, is removed and the job makes its own (cold), which reports
whatever is wrong. `hits` and `misses` count the takes that got an item or none.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import secrets
import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from podman import PodmanClient

from cynode.node.runtime.inference_pod import InferencePod
from cynode.node.runtime.labels import warm_labels
from cynode.node.runtime.settings import InferencePodSettings, SandboxSettings

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


@dataclass(frozen=True)
class WarmStatus:
    """One pool at a glance, for /metrics and the capability report."""

    kind: str
    # The key the items are made for, readable ("" before the first fill).
    key: str
    image: str
    size: int
    ready: int
    # Ready, or in the making and not yet claimed: what a take would get now or soon.
    available: int
    hits: int
    misses: int


class WarmPool(Generic[K, T]):
    """The mechanics of a pool of single-use warm items of one key at a time."""

    kind = "item"

    def __init__(self, client: PodmanClient, size: int = 1, *, idle_s: float = 0) -> None:
        if size < 0:
            raise ValueError("a warm pool's size cannot be negative")
        self.client = client
        self.size = size
        # Shrink to nothing after this long without a take; 0: never.
        self.idle_s = idle_s
        self._last_take = time.monotonic()
        self._idle_timer: asyncio.TimerHandle | None = None
        self.dormant = False
        self.pool_id = secrets.token_hex(4)
        self._serial = itertools.count(1)
        self._key: K | None = None
        self._ready: list[T] = []
        # In the making, for the key each was started with; a `take` may claim one.
        self._making: dict[asyncio.Task[T], K] = {}
        self._claimed: set[asyncio.Task[T]] = set()
        self._removals: set[asyncio.Task[None]] = set()
        self._closed = False
        self.made = 0
        self.taken = 0
        self.failed = 0
        self.hits = 0
        self.misses = 0

    # -- what a kind of item says ------------------------------------------------------

    def key_of(self, settings: SandboxSettings) -> K | None:
        """What an item made for these settings depends on; None: none are made."""
        raise NotImplementedError

    def target(self, key: K) -> int:
        """How many items to keep ready or in the making for this key."""
        return self.size

    async def make(self, key: K, stem: str) -> T:
        """Makes one ready item; on failure, removes what it made and raises."""
        raise NotImplementedError

    async def usable(self, item: T) -> bool:
        """Checked when taken: the item still works."""
        return True

    async def remove(self, item: T) -> None:
        raise NotImplementedError

    def name(self, item: T) -> str:
        return str(item)

    def describe(self, key: K) -> tuple[str, str]:
        """The key, readable, and the image its items run."""
        return str(key), ""

    # -- the pool ----------------------------------------------------------------------

    @property
    def ready_count(self) -> int:
        return len(self._ready)

    @property
    def available(self) -> int:
        """Ready, or in the making and not claimed by a job yet."""
        making = sum(
            1
            for task, key in self._making.items()
            if key == self._key and task not in self._claimed
        )
        return self.ready_count + making

    def status(self) -> WarmStatus:
        key, image = self.describe(self._key) if self._key is not None else ("", "")
        size = self.target(self._key) if self._key is not None and not self._closed else 0
        return WarmStatus(
            kind=self.kind,
            key=key,
            image=image,
            size=size,
            ready=self.ready_count,
            available=self.available,
            hits=self.hits,
            misses=self.misses,
        )

    @property
    def key(self) -> K | None:
        """The key the pool's items are made for now (None before the first fill)."""
        return self._key

    def fill(self, settings: SandboxSettings) -> None:
        """Keeps `target` items ready or in the making for these settings (in the
        background); items made for other settings are discarded. A no-op when these
        settings have no key, for a pool of size 0, or a closed pool."""
        if self._closed or self.size == 0 or self.dormant:
            return
        key = self.key_of(settings)
        if key != self._key:
            self._discard_ready()
            self._key = key
        if key is None:
            return
        self._watch_idle()
        # Items in the making for older settings will be removed when done: not counted.
        unclaimed = sum(
            1
            for task, made_for in self._making.items()
            if made_for == key and task not in self._claimed
        )
        for _ in range(self.target(key) - len(self._ready) - unclaimed):
            self._start_making(key)

    def note_miss(self) -> None:
        """A job that could have used an item took the cold path without asking."""
        self.misses += 1

    async def take(self, settings: SandboxSettings) -> T | None:
        """An item checked just now, made for these settings, now the caller's alone to
        use and remove; None when there is none (then make one cold).

        With none ready but one in the making (the refill after the previous job), that
        one is waited for: it started earlier than a cold one would, and two made at
        once would only slow each other down.
        """
        item = await self._take(settings)
        if item is None:
            self.misses += 1
        else:
            self.hits += 1
            self.taken += 1
        return item

    async def _take(self, settings: SandboxSettings) -> T | None:
        key = self.key_of(settings)
        if self._closed or self.size == 0 or key is None:
            return None
        self._last_take = time.monotonic()
        if self.dormant:
            # Asked for again after an idle spell: this job goes cold, the next need not.
            self.dormant = False
            self.fill(settings)
            return None
        if key != self._key:
            self.fill(settings)
            return None
        while self._ready:
            item = self._ready.pop(0)
            if await self.usable(item):
                return item
            log.warning("warm %s %s is no longer usable; removing it", self.kind, self.name(item))
            self._remove_later(item)
        for task, task_key in self._making.items():
            if task_key == key and task not in self._claimed:
                self._claimed.add(task)
                try:
                    return await asyncio.shield(task)
                except asyncio.CancelledError:
                    if task.cancelled():  # the pool was closed, not the caller cancelled
                        return None
                    # The caller gave up; its claim ends and the item goes away.
                    task.add_done_callback(self._unclaim)
                    raise
                except Exception:
                    return None  # already logged and removed by the maker
        return None

    async def wait_filled(self) -> None:
        """Returns once nothing is in the making (tests, the benchmark: an idle node)."""
        while self._making:
            await asyncio.wait(set(self._making))

    async def close(self) -> None:
        """Stops making items and removes every item the pool holds (node stop)."""
        self._closed = True
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        for task in self._making:
            task.cancel()
        if self._making:
            await asyncio.wait(set(self._making))
        self._discard_ready()
        if self._removals:
            await asyncio.wait(set(self._removals))

    # -- inside ---------------------------------------------------------------------

    def _watch_idle(self) -> None:
        if self.idle_s <= 0 or self._idle_timer is not None:
            return
        due = self._last_take + self.idle_s - time.monotonic()
        self._idle_timer = asyncio.get_running_loop().call_later(max(due, 0), self._idle_check)

    def _idle_check(self) -> None:
        self._idle_timer = None
        if self._closed or self.dormant:
            return
        if time.monotonic() - self._last_take < self.idle_s:
            self._watch_idle()  # taken since: look again when that take is as old
            return
        log.info(
            "warm %s pool %s unused for %g s: letting it go", self.kind, self.pool_id, self.idle_s
        )
        self.dormant = True
        for task in self._making:
            if task not in self._claimed:
                task.cancel()
        self._discard_ready()

    def _start_making(self, key: K) -> None:
        stem = f"warm-{self.pool_id}-{next(self._serial)}"
        task = asyncio.create_task(self.make(key, stem), name=f"warm-{stem}")
        self._making[task] = key
        task.add_done_callback(self._made)

    def _made(self, task: asyncio.Task[T]) -> None:
        # The claim ends here and only here. A job may claim a task that has finished but
        # whose callback (this) has not run yet: its await returns at once, and had it
        # dropped the claim itself, this would then put the same item in _ready for a
        # second job (seen once in CI: two jobs handed one sandbox).
        key = self._making.pop(task)
        claimed = task in self._claimed
        self._claimed.discard(task)
        if task.cancelled():
            return
        if task.exception() is not None:
            self.failed += 1
            return
        self.made += 1
        if claimed:
            return  # the claimer has it (one that gave up has _unclaim remove it)
        item = task.result()
        if self._closed or key != self._key:
            self._remove_later(item)
        else:
            self._ready.append(item)

    def _unclaim(self, task: asyncio.Task[T]) -> None:
        # A claimer that gave up while the item was in the making: nobody will use it.
        self._claimed.discard(task)
        if not task.cancelled() and task.exception() is None:
            self._remove_later(task.result())

    def _discard_ready(self) -> None:
        ready, self._ready = self._ready, []
        for item in ready:
            self._remove_later(item)

    def _remove_later(self, item: T) -> None:
        task = asyncio.create_task(self._remove_quietly(item), name=f"remove-{self.name(item)}")
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)

    async def _remove_quietly(self, item: T) -> None:
        try:
            await self.remove(item)
        except Exception as exc:
            log.warning(
                "could not remove warm %s %s (%s); start-up cleanup will",
                self.kind,
                self.name(item),
                exc,
            )


PoolKey = tuple[str, InferencePodSettings]


def pool_key(settings: SandboxSettings) -> PoolKey | None:
    """What a warm pod depends on; None for a node without inference. The default model
    only reaches the sandbox's env, so it does not make pods stale."""
    if settings.inference is None or not settings.node_id:
        return None
    return settings.node_id, dataclasses.replace(settings.inference, default_model="")


class WarmPodPool(WarmPool[PoolKey, InferencePod]):
    """Warm inference pods: the volume, the loopback-only pod and a proxy that answers."""

    kind = "pod"

    def key_of(self, settings: SandboxSettings) -> PoolKey | None:
        return pool_key(settings)

    async def make(self, key: PoolKey, stem: str) -> InferencePod:
        node_id, settings = key
        pod = InferencePod(
            self.client,
            settings,
            stem=stem,
            labels=lambda role: warm_labels(node_id, self.pool_id, role),
        )
        try:
            await pod.create()
            pod.start_sidecar()
            await pod.wait_answering()
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                log.warning("could not make warm pod %s: %s", pod.pod_name, exc)
            # shield: a cancel (node stop) still removes what was made.
            await asyncio.shield(self._remove_quietly(pod))
            raise
        log.info("warm pod %s is ready", pod.pod_name)
        return pod

    async def usable(self, item: InferencePod) -> bool:
        return await item.answers()

    async def remove(self, item: InferencePod) -> None:
        await item.remove()

    def name(self, item: InferencePod) -> str:
        return item.pod_name
