from __future__ import annotations

from cynode.orchestrator.events import JOBS, EventBus, task_topic


async def test_publish_reaches_each_subscriber_of_the_topic_only() -> None:
    bus = EventBus()
    async with bus.subscribe(JOBS) as a, bus.subscribe(JOBS) as b, bus.subscribe("x") as c:
        bus.publish(JOBS, 1)
        assert a.get_nowait() == 1 and b.get_nowait() == 1
        assert c.empty()
        assert bus.subscriber_count(JOBS) == 2
    assert bus.subscriber_count(JOBS) == 0


async def test_slow_subscriber_drops_oldest_and_publisher_never_blocks() -> None:
    bus = EventBus(queue_size=2)
    async with bus.subscribe(task_topic("t1")) as q:
        for i in range(5):
            bus.publish("task:t1", i)
        assert [q.get_nowait(), q.get_nowait()] == [3, 4]


def test_publish_without_subscribers_is_a_no_op() -> None:
    EventBus().publish(JOBS)
