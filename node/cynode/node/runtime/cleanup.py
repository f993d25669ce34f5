"""Removes every container, pod and volume labelled with a node id (run at node start).

A node that crashed or was killed leaves its sandboxes behind; its jobs are re-queued by
the orchestrator, so whatever still carries this node's label is garbage.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from podman import PodmanClient

from cynode.node.runtime import ops
from cynode.node.runtime.labels import node_label_filter

log = logging.getLogger(__name__)


@dataclass
class CleanupReport:
    containers: list[str] = field(default_factory=list)
    pods: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.containers) + len(self.pods) + len(self.volumes)


def remove_leftovers_sync(client: PodmanClient, node_id: str) -> CleanupReport:
    """Pods first (removing one removes its containers, and its infra container, which
    carries the pod's labels, can go no other way), then containers, then volumes."""
    filters = node_label_filter(node_id)
    report = CleanupReport()
    for pod in client.pods.list(filters=filters):
        ops.remove_pod(client, pod.id)
        report.pods.append(pod.name)
    for container in client.containers.list(all=True, filters=filters):
        ops.remove_container(client, container.id)
        report.containers.append(container.name)
    for volume in client.volumes.list(filters=filters):
        ops.remove_volume(client, volume.name)
        report.volumes.append(volume.name)
    if report.total:
        log.info(
            "removed leftovers of node %s: %d containers, %d pods, %d volumes",
            node_id,
            len(report.containers),
            len(report.pods),
            len(report.volumes),
        )
    return report


async def remove_leftovers(client: PodmanClient, node_id: str) -> CleanupReport:
    return await asyncio.to_thread(remove_leftovers_sync, client, node_id)
