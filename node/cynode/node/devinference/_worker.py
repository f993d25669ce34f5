"""The model thread: one worker thread owns the llama.cpp contexts, one request at a time.

llama.cpp contexts are not thread-safe and a 135M model saturates a core anyway, so
requests queue on an asyncio lock; results cross to the event loop through a queue so
the loop stays free to accept, stream and notice clients that left.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar, cast

T = TypeVar("T")
_END = object()


class ModelWorker:
    def __init__(self, executor: ThreadPoolExecutor) -> None:
        self._executor = executor
        self._lock = asyncio.Lock()

    async def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the model thread, after any request ahead of it."""
        async with self._lock:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def stream(
        self, work: Callable[[threading.Event], Iterator[T]]
    ) -> AsyncGenerator[T, None]:
        """Run ``work(cancel)`` on the model thread and yield what it yields, as it does.

        Closing the generator early sets ``cancel``; the model is released only once the
        thread has stopped, so the next request never shares a busy context.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        cancel = threading.Event()

        def post(item: object) -> None:
            with contextlib.suppress(RuntimeError):  # the loop may be gone at shutdown
                loop.call_soon_threadsafe(queue.put_nowait, item)

        def run() -> None:
            try:
                for item in work(cancel):
                    post(item)
                    if cancel.is_set():
                        break
            except BaseException as exc:
                post(exc)
            finally:
                post(_END)

        async with self._lock:
            future = loop.run_in_executor(self._executor, run)
            try:
                while True:
                    item = await queue.get()
                    if item is _END:
                        return
                    if isinstance(item, BaseException):
                        raise item
                    yield cast(T, item)
            finally:
                cancel.set()
                await asyncio.shield(future)
