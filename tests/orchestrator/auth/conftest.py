from tests.orchestrator.gatewaykit import gateway, http, rest_url, served

__all__ = ["gateway", "http", "rest_url", "served"]
