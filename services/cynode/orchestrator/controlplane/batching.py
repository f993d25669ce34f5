"""Coalescing what is already queued on a dispatch stream into batch messages.

Each gRPC message costs both ends a fixed amount of work (a write through the HTTP/2
transport, a read, the framework's coroutine hops) that dwarfs encoding a small message,
so the writer of a stream that finds several messages waiting sends them as one batch.
It never waits for more to arrive. Used by the orchestrator's end of the stream and by
the simulated node; the node daemon has its own copy (it does not import the
orchestrator).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, TypeVar

# A batch stays well under the 4 MiB gRPC receive limit a peer may keep: a large message
# (an assignment with attachments, a result with long output) goes alone rather than
# making a batch that the peer would refuse.
BATCH_BYTES = 1 << 20


class _Sized(Protocol):
    def ByteSize(self) -> int: ...


M = TypeVar("M", bound=_Sized)


def coalesce(
    messages: Sequence[M], wrap: Callable[[list[M]], M], limit: int = BATCH_BYTES
) -> Iterator[M]:
    """`messages` in order as few writes: runs of them wrapped as batches of at most
    `limit` bytes; a run of one (or a message over the limit) goes unwrapped."""
    if len(messages) == 1:
        yield messages[0]
        return
    group: list[M] = []
    size = 0
    for msg in messages:
        n = msg.ByteSize()
        if group and size + n > limit:
            yield group[0] if len(group) == 1 else wrap(group)
            group, size = [], 0
        group.append(msg)
        size += n
    if group:
        yield group[0] if len(group) == 1 else wrap(group)
