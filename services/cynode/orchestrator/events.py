"""In-process wake-ups between the parts of one orchestrator process.

Publishing never blocks and never fails: a subscriber that falls behind loses the
oldest wake-ups, which is safe because every subscriber re-reads the store when woken
(or, for a task's end, is handed the last state there is).
The control plane bridges topics across replicas with Postgres LISTEN/NOTIFY.

Topics in use:
- `jobs`: a job was queued, or a cancel was requested; wakes the scheduler.
- `task:<task_id>`: the task's status or output changed, or an upload of its artifacts
  was sealed; wakes WatchTask streams and artifact listings that wait for the set. When
  this process's ingest ended the task, the payload is what it wrote
  (`lifecycle.Ended`), and a watcher need not read it back.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

JOBS = "jobs"


def task_topic(task_id: str) -> str:
    return f"task:{task_id}"


class EventBus:
    def __init__(self, queue_size: int = 64) -> None:
        self._queue_size = queue_size
        self._subscribers: dict[str, set[asyncio.Queue[Any]]] = defaultdict(set)

    def publish(self, topic: str, payload: Any = None) -> None:
        for queue in list(self._subscribers.get(topic, ())):
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(payload)

    @asynccontextmanager
    async def subscribe(self, topic: str) -> AsyncIterator[asyncio.Queue[Any]]:
        queue: asyncio.Queue[Any] = asyncio.Queue(self._queue_size)
        self._subscribers[topic].add(queue)
        try:
            yield queue
        finally:
            subs = self._subscribers.get(topic)
            if subs is not None:
                subs.discard(queue)
                if not subs:
                    del self._subscribers[topic]

    def subscriber_count(self, topic: str) -> int:
        return len(self._subscribers.get(topic, ()))
