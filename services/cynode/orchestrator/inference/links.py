"""The inference links this replica holds: one per node that opened
InferenceLinkService.Serve, with what it serves, how many calls it takes at once, and
the calls under way on it (SPEC §7.12)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from cynode.controlplane.v1 import inference_pb2
from cynode.inference.v1 import chat_pb2


class LinkLost(Exception):
    """The node's link ended while a call was under way on it."""


class CallFailed(Exception):
    """The node answered the call with CallFailed."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# What a call's queue receives: pieces, embeddings, or the reason it ended badly.
Event = chat_pb2.ChatChunk | chat_pb2.EmbeddingsResult | CallFailed | LinkLost

_call_ids = itertools.count(1)


@dataclass(eq=False)
class NodeLink:
    node_id: str
    slug: str
    models: frozenset[str]
    capacity: int = 1
    # Calls placed on this link and not yet released (the router counts them).
    active: int = 0
    closed: bool = False
    calls: dict[str, asyncio.Queue[Event]] = field(default_factory=dict)
    pending: list[inference_pb2.ServeResponse] = field(default_factory=list)
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def load(self) -> float:
        return self.active / self.capacity

    @property
    def free(self) -> bool:
        return not self.closed and self.active < self.capacity

    def send(self, msg: inference_pb2.ServeResponse) -> bool:
        if self.closed:
            return False
        self.pending.append(msg)
        self._wakeup.set()
        return True

    async def take(self) -> list[inference_pb2.ServeResponse]:
        """Everything queued for the node, in order; empty once closed."""
        while not self.pending and not self.closed:
            self._wakeup.clear()
            await self._wakeup.wait()
        taken, self.pending = self.pending, []
        return taken

    def open_call(self) -> tuple[str, asyncio.Queue[Event]]:
        call_id = f"{self.node_id}-{next(_call_ids)}"
        queue: asyncio.Queue[Event] = asyncio.Queue()
        if self.closed:
            queue.put_nowait(LinkLost(f"node {self.slug} is gone"))
        self.calls[call_id] = queue
        return call_id, queue

    def end_call(self, call_id: str, *, cancel: bool) -> None:
        if self.calls.pop(call_id, None) is not None and cancel:
            self.send(inference_pb2.ServeResponse(cancel=inference_pb2.CancelCall(call_id=call_id)))

    def deliver(self, call_id: str, event: Event) -> None:
        queue = self.calls.get(call_id)
        if queue is not None:
            queue.put_nowait(event)

    def close(self) -> None:
        """The stream ended: every call under way learns it at once."""
        if self.closed:
            return
        self.closed = True
        self._wakeup.set()
        for queue in self.calls.values():
            queue.put_nowait(LinkLost(f"node {self.slug} went away mid-call"))
        self.calls.clear()


class LinkRegistry:
    """Links by node; `on_change` runs whenever one comes or goes."""

    def __init__(self) -> None:
        self._by_node: dict[str, NodeLink] = {}
        # Called whenever a link comes or goes (the router's queue places waiters then).
        self.on_change: Callable[[], None] = lambda: None

    def add(self, link: NodeLink) -> NodeLink | None:
        old = self._by_node.get(link.node_id)
        self._by_node[link.node_id] = link
        self.changed()
        return old

    def remove(self, link: NodeLink) -> bool:
        if self._by_node.get(link.node_id) is link:
            del self._by_node[link.node_id]
            self.changed()
            return True
        return False

    def get(self, node_id: str) -> NodeLink | None:
        return self._by_node.get(node_id)

    def __iter__(self) -> Iterator[NodeLink]:
        return iter(list(self._by_node.values()))

    def __len__(self) -> int:
        return len(self._by_node)

    def models(self) -> dict[str, int]:
        """Every model a connected node serves, with how many nodes serve it."""
        counts: dict[str, int] = {}
        for link in self:
            if not link.closed:
                for model in link.models:
                    counts[model] = counts.get(model, 0) + 1
        return dict(sorted(counts.items()))

    def serves(self, model: str) -> bool:
        return any(model in link.models and not link.closed for link in self)

    def place(self, model: str) -> NodeLink | None:
        """The least busy open link that serves `model` and has a free slot."""
        candidates = [link for link in self if model in link.models and link.free]
        if not candidates:
            return None
        return min(candidates, key=lambda link: (link.load, link.active))

    def changed(self) -> None:
        self.on_change()
