"""The CyNode orchestrator: user gateway, control plane, store."""
