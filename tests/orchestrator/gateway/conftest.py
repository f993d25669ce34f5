from tests.orchestrator.gatewaykit import gateway, served

__all__ = ["gateway", "served"]
