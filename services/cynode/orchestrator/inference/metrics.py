"""Prometheus metrics of the OpenAI door and InferenceService, on the gateway's
/metrics: requests by kind, model and outcome, tokens, time to first token, and the
time requests wait in the fair queue."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

_FAST = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class InferenceMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry or CollectorRegistry()
        self.requests = Counter(
            "cynode_inference_requests",
            "chat and embeddings requests by kind, model and outcome (ok or an error code)",
            ["kind", "model", "outcome"],
            registry=registry,
        )
        self.tokens = Counter(
            "cynode_inference_tokens",
            "tokens the models counted, by model and direction (prompt or completion)",
            ["model", "direction"],
            registry=registry,
        )
        self.first_token = Histogram(
            "cynode_inference_time_to_first_token_seconds",
            "from a chat request's arrival to its first piece of answer",
            ["model"],
            buckets=_FAST,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "cynode_inference_queue_wait_seconds",
            "time a request waited in the fair queue for a node slot",
            buckets=_FAST,
            registry=registry,
        )
        self.redacted = Counter(
            "cynode_inference_secrets_redacted",
            "secrets replaced with SECRET_REDACTED in message content, by kind",
            ["kind"],
            registry=registry,
        )
