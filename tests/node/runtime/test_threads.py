from __future__ import annotations

import threading

import pytest

from cynode.node.runtime.threads import in_thread


async def test_result_comes_back_from_another_thread() -> None:
    assert await in_thread(lambda: threading.current_thread().name, name="probe") == "probe"


async def test_exception_is_raised_in_the_awaiting_coroutine() -> None:
    def boom() -> None:
        raise ValueError("nope")

    with pytest.raises(ValueError, match="nope"):
        await in_thread(boom, name="boom")


async def test_a_cancelled_waiter_does_not_break_the_thread() -> None:
    release = threading.Event()
    done = threading.Event()

    def slow() -> int:
        release.wait(5)
        done.set()
        return 1

    future = in_thread(slow, name="slow")
    future.cancel()
    release.set()
    assert done.wait(5)
    assert future.cancelled()
