"""The node's /metrics counters."""

from __future__ import annotations

from cynode.jobs.v1 import job_pb2
from cynode.node.metrics import NodeMetrics


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
