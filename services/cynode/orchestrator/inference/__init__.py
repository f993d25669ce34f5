"""The models on the nodes, through the gateway (SPEC §10): the links nodes hold open,
the router (fair queue, placement, retries), the OpenAI door and InferenceService."""

from cynode.orchestrator.inference.links import LinkRegistry, NodeLink
from cynode.orchestrator.inference.metrics import InferenceMetrics
from cynode.orchestrator.inference.router import Router

__all__ = ["InferenceMetrics", "LinkRegistry", "NodeLink", "Router"]
