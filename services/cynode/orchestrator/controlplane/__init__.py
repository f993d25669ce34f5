"""The control plane: node registration and config (NodeService), the dispatch stream
(DispatchService.Connect; protocol in `dispatch`), the scheduler with leases, and the
admin fleet view (NodeAdminService.ListNodes).

Use: `cp = build_control_plane(engine, bus, ControlPlaneSettings(psk=..., jwt_secret=...),
authenticate=authenticator.authenticate)`; register `cp.servicers` on the control-plane
ports and `cp.gateway_servicers` on the user gateway ports; `await cp.start()` before the
control-plane port opens (start-up holds the leases nodes could not renew while no
orchestrator ran), `await cp.stop()` on shutdown.
"""

from cynode.orchestrator.controlplane.admin import NodeInfo, inference_path_available, list_nodes
from cynode.orchestrator.controlplane.plane import (
    DISPATCH_SERVICE,
    NODE_ADMIN_SERVICE,
    NODE_SERVICE,
    ControlPlane,
    build_control_plane,
)
from cynode.orchestrator.controlplane.settings import ControlPlaneSettings
from cynode.orchestrator.controlplane.tokens import (
    InvalidNodeToken,
    NodeClaims,
    issue_node_token,
    verify_node_token,
)

__all__ = [
    "DISPATCH_SERVICE",
    "NODE_ADMIN_SERVICE",
    "NODE_SERVICE",
    "ControlPlane",
    "ControlPlaneSettings",
    "InvalidNodeToken",
    "NodeClaims",
    "NodeInfo",
    "build_control_plane",
    "inference_path_available",
    "issue_node_token",
    "list_nodes",
    "verify_node_token",
]
