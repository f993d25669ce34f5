"""Labels on everything the runtime creates, so leftovers can be found and removed."""

from __future__ import annotations

from cynode.jobs.v1 import job_pb2

LABEL_JOB_ID = "cynode.job_id"
LABEL_TASK_ID = "cynode.task_id"
LABEL_NODE_ID = "cynode.node_id"
LABEL_ATTEMPT = "cynode.attempt"
LABEL_ROLE = "cynode.role"
# On the pieces of a warm inference pod (made before any job): the pool that made them.
LABEL_WARM = "cynode.warm_pool"


def job_labels(spec: job_pb2.JobSpec, node_id: str, role: str = "sandbox") -> dict[str, str]:
    return {
        LABEL_JOB_ID: spec.job_id,
        LABEL_TASK_ID: spec.task_id,
        LABEL_NODE_ID: node_id,
        LABEL_ATTEMPT: str(spec.attempt),
        LABEL_ROLE: role,
    }


def warm_labels(node_id: str, pool_id: str, role: str) -> dict[str, str]:
    """A warm pod's pieces: no job yet, so the node and the pool that made them. The job
    that takes the pod is in the node's log and on its sandbox container, which joins
    the pod; start-up cleanup finds them all by the node label."""
    return {LABEL_NODE_ID: node_id, LABEL_ROLE: role, LABEL_WARM: pool_id}


def node_label_filter(node_id: str) -> dict[str, str]:
    """A podman-py `filters` mapping selecting what belongs to one node."""
    if not node_id:
        # An empty value would select by key only, i.e. every node's objects.
        raise ValueError("node_id must not be empty")
    return {"label": f"{LABEL_NODE_ID}={node_id}"}
