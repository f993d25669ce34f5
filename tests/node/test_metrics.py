"""The node's /metrics counters."""

from __future__ import annotations

from cynode.jobs.v1 import job_pb2
from cynode.node.metrics import NodeMetrics
from cynode.node.runtime.warm_pool import WarmStatus


def test_metrics_count_results_by_status() -> None:
    metrics = NodeMetrics()
    done = job_pb2.JobResult(job_id="A", attempt=1, status=job_pb2.JOB_STATUS_COMPLETED)
    done.started_at.FromSeconds(100)
    done.ended_at.FromSeconds(103)
    metrics.record_result(done)
    metrics.record_result(
        job_pb2.JobResult(job_id="B", status=job_pb2.JOB_STATUS_FAILED, reason="timeout")
    )
    text = metrics.render().decode()
    assert 'cynode_node_jobs_total{reason="",status="completed"} 1.0' in text
    assert 'cynode_node_jobs_total{reason="timeout",status="failed"} 1.0' in text
    assert "cynode_node_job_run_seconds_sum 3.0" in text


def test_warm_sandbox_metrics_are_read_from_the_pools_at_each_scrape() -> None:
    metrics = NodeMetrics()
    pools = [WarmStatus("sandbox", "img mem=512m", "img", 2, 2, 2, 7, 1)]
    metrics.watch_warm(lambda: pools)
    metrics.process_start.labels(path="warm").observe(0.02)
    text = metrics.render().decode()
    assert "cynode_node_warm_sandbox_hits_total 7.0" in text
    assert "cynode_node_warm_sandbox_misses_total 1.0" in text
    assert 'cynode_node_warm_sandbox_ready{sandbox_class="img mem=512m"} 2.0' in text
    assert 'cynode_node_assignment_to_process_start_seconds_count{path="warm"} 1.0' in text
    pools[:] = [WarmStatus("pod", "pods", "", 1, 1, 1, 3, 0)]  # pods are not sandboxes
    text = metrics.render().decode()
    assert "cynode_node_warm_sandbox_hits_total 0.0" in text
    assert "cynode_node_warm_sandbox_ready{" not in text
