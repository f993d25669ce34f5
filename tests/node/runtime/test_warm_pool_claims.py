"""The warm pool's claims, without Podman: an item made for a job that claimed it is that
job's alone, however the claim and the maker's completion interleave (SPEC §4.10)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from cynode.node.runtime.settings import SandboxSettings
from cynode.node.runtime.warm_pool import WarmPool

SETTINGS = SandboxSettings(image="img", node_id="node-claims")


class Pool(WarmPool[str, str]):
    """Items are names; `on_made` runs inside make, just before the item is returned."""

    kind = "test"

    def __init__(self) -> None:
        super().__init__(client=None, size=1)  # type: ignore[arg-type]
        self.on_made: list[Any] = []
        self.removed: list[str] = []

    def key_of(self, settings: SandboxSettings) -> str | None:
        return settings.image

    async def make(self, key: str, stem: str) -> str:
        for hook in self.on_made:
            hook()
        return stem

    async def usable(self, item: str) -> bool:
        return True

    async def remove(self, item: str) -> None:
        self.removed.append(item)

    def name(self, item: str) -> str:
        return item


def _run_now(coro: Coroutine[Any, Any, str | None]) -> str | None:
    """Runs a coroutine that never suspends to its end, here and now."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    raise AssertionError("the take suspended")


async def test_a_take_between_the_items_completion_and_its_callback_is_the_only_one() -> None:
    pool = Pool()
    taken: list[str | None] = []
    loop = asyncio.get_running_loop()
    # Scheduled from inside make, this runs after the making task has finished but before
    # its done callback: the window in which a job's claim meets a finished task.
    pool.on_made.append(lambda: loop.call_soon(lambda: taken.append(_run_now(pool.take(SETTINGS)))))
    pool.fill(SETTINGS)
    await pool.wait_filled()
    await asyncio.sleep(0)
    assert taken and taken[0] is not None, "the first take got nothing"
    pool.on_made.clear()
    second = await pool.take(SETTINGS)
    assert second != taken[0], "one item handed to two jobs"
    await pool.close()


async def test_a_claimer_that_gives_up_leaves_its_item_to_nobody() -> None:
    pool = Pool()
    release = asyncio.Event()

    async def slow_make(key: str, stem: str) -> str:
        await release.wait()
        return stem

    pool.make = slow_make  # type: ignore[method-assign]
    pool.fill(SETTINGS)
    waiter = asyncio.create_task(pool.take(SETTINGS))
    await asyncio.sleep(0.01)
    waiter.cancel()
    release.set()
    await pool.wait_filled()
    await asyncio.sleep(0.01)
    assert pool.ready_count == 0 and len(pool.removed) == 1
    await pool.close()
