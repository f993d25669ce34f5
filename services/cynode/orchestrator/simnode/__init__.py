"""A simulated worker node for tests and benchmarks: a real gRPC client of the control
plane (NodeService and DispatchService.Connect) with a scripted runtime in place of Podman."""

from cynode.orchestrator.simnode.node import Runtime, SimNode, completed_runtime

__all__ = ["Runtime", "SimNode", "completed_runtime"]
