"""The dispatch streams this replica holds: one session per connected node."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field

from cynode.controlplane.v1 import dispatch_pb2


@dataclass(eq=False)
class NodeSession:
    node_id: str
    slug: str
    inference: bool
    # The node's max_concurrency: credits never exceed it minus what it holds.
    capacity: int = 1
    # Slots the node granted with Ready and we have not yet filled.
    credits: int = 0
    # (job, attempt) sent to or held by the node whose result has not arrived.
    outstanding: set[tuple[str, int]] = field(default_factory=set)
    closed: bool = False
    # The node's Hello said it reads ResponseBatch.
    batches: bool = False
    # Warm sandboxes the node said it has at hand (its last Ready), less the plain jobs
    # sent to it since: the scheduler prefers such a node for a plain job (SPEC §4.10).
    warm_ready: int = 0
    # Messages queued for the stream, sent in order by the handler; a list and an event
    # rather than a queue, so the handler takes all of them in one step.
    pending: list[dispatch_pb2.ConnectResponse] = field(default_factory=list)
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    def grant(self, free_slots: int) -> None:
        """Ready is a credit grant. The cap also makes a node that reports its absolute
        free slots safe: it can never be given more than capacity minus what it holds."""
        room = self.capacity - len(self.outstanding)
        self.credits = max(0, min(self.credits + max(0, free_slots), room))

    def send(self, msg: dispatch_pb2.ConnectResponse) -> bool:
        if self.closed:
            return False
        self.pending.append(msg)
        self._wakeup.set()
        return True

    def close(self) -> None:
        """Ends the stream from our side; the handler returns once what was queued before
        is sent."""
        if not self.closed:
            self.closed = True
            self._wakeup.set()

    async def take(self) -> list[dispatch_pb2.ConnectResponse]:
        """Everything queued so far, in order, waiting while there is nothing; an empty
        list once the session is closed and drained."""
        while not self.pending and not self.closed:
            self._wakeup.clear()
            await self._wakeup.wait()
        taken, self.pending = self.pending, []
        return taken


class Registry:
    def __init__(self) -> None:
        self._by_node: dict[str, NodeSession] = {}

    def add(self, session: NodeSession) -> NodeSession | None:
        """Makes `session` the node's stream; returns the one it replaces."""
        old = self._by_node.get(session.node_id)
        self._by_node[session.node_id] = session
        return old

    def remove(self, session: NodeSession) -> bool:
        """True when `session` was still the node's current stream."""
        if self._by_node.get(session.node_id) is session:
            del self._by_node[session.node_id]
            return True
        return False

    def get(self, node_id: str) -> NodeSession | None:
        return self._by_node.get(node_id)

    def __iter__(self) -> Iterator[NodeSession]:
        return iter(list(self._by_node.values()))

    def __len__(self) -> int:
        return len(self._by_node)

    def node_ids(self) -> list[str]:
        return list(self._by_node)
