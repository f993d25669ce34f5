"""Prometheus metrics of one node, in their own registry (one per daemon)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cynode.jobs.v1 import job_pb2

from .runtime.warm_pool import WarmStatus

_STATUS = {
    job_pb2.JOB_STATUS_COMPLETED: "completed",
    job_pb2.JOB_STATUS_FAILED: "failed",
    job_pb2.JOB_STATUS_CANCELED: "canceled",
    job_pb2.JOB_STATUS_SUPERSEDED: "superseded",
}
_RUN_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 10800)
_START_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)
_PROCESS_START_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)


class WarmCollector(Collector):
    """The warm sandbox pool's counts, read from the pool at each scrape (the pool is
    their one home)."""

    def __init__(self, source: Callable[[], list[WarmStatus]]) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        statuses = [s for s in self.source() if s.kind == "sandbox"]
        hits = CounterMetricFamily(
            "cynode_node_warm_sandbox_hits", "Plain jobs that ran in a warm sandbox"
        )
        misses = CounterMetricFamily(
            "cynode_node_warm_sandbox_misses", "Plain jobs that found no warm sandbox"
        )
        ready = GaugeMetricFamily(
            "cynode_node_warm_sandbox_ready",
            "Warm sandboxes ready now, per sandbox class",
            labels=["sandbox_class"],
        )
        hits.add_metric([], sum(s.hits for s in statuses))
        misses.add_metric([], sum(s.misses for s in statuses))
        for status in statuses:
            if status.key:
                ready.add_metric([status.key], status.ready)
        yield hits
        yield misses
        yield ready


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs = Counter(
            "cynode_node_jobs",
            "Jobs finished on this node",
            ["status", "reason"],
            registry=self.registry,
        )
        self.job_seconds = Histogram(
            "cynode_node_job_run_seconds",
            "Job run time (container start to end)",
            buckets=_RUN_BUCKETS,
            registry=self.registry,
        )
        self.container_start = Histogram(
            "cynode_node_container_start_seconds",
            "Assignment to container started",
            buckets=_START_BUCKETS,
            registry=self.registry,
        )
        self.process_start = Histogram(
            "cynode_node_assignment_to_process_start_seconds",
            "Assignment to the job's process started (warm: handed to a warm sandbox)",
            ["path"],
            buckets=_PROCESS_START_BUCKETS,
            registry=self.registry,
        )
        self.running = Gauge("cynode_node_jobs_running", "Jobs running now", registry=self.registry)
        self.free_slots = Gauge(
            "cynode_node_free_slots", "Slots offered to the orchestrator", registry=self.registry
        )

    def watch_warm(self, source: Callable[[], list[WarmStatus]]) -> None:
        """Report the warm pools that `source` describes at each scrape."""
        self.registry.register(WarmCollector(source))

    def record_result(self, result: job_pb2.JobResult) -> None:
        status = _STATUS.get(result.status, "unknown")
        self.jobs.labels(status=status, reason=result.reason).inc()
        if result.HasField("started_at") and result.HasField("ended_at"):
            seconds = (result.ended_at.ToNanoseconds() - result.started_at.ToNanoseconds()) / 1e9
            self.job_seconds.observe(max(0.0, seconds))

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
