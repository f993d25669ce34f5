"""Many jobs in a row (some at once) leave no container or volume behind."""

from __future__ import annotations

import asyncio
import os

import pytest
from podman import PodmanClient

from cynode.jobs.v1 import job_pb2
from cynode.node.runtime import JobRunner, SandboxSettings
from tests.node.runtime.conftest import leftovers, make_spec

pytestmark = [pytest.mark.podman, pytest.mark.slow]

JOBS = int(os.environ.get("CYNODE_TEST_MANY_JOBS", "50"))
AT_ONCE = 5


@pytest.mark.timeout(600)
async def test_many_jobs_leave_nothing_behind(
    podman_client: PodmanClient, settings: SandboxSettings
) -> None:
    slots = asyncio.Semaphore(AT_ONCE)

    async def one(i: int) -> job_pb2.JobResult:
        async with slots:
            spec = make_spec(
                commands=[f"echo job-{i}", f"exit {i % 3}"],
                attachments=[job_pb2.Attachment(name="in.txt", content=b"x")],
            )
            return await JobRunner(podman_client, settings).run(spec)

    results = await asyncio.gather(*(one(i) for i in range(JOBS)))
    for i, result in enumerate(results):
        assert result.stdout == f"job-{i}\n".encode()
        assert result.exit_code == i % 3
        expected = job_pb2.JOB_STATUS_COMPLETED if i % 3 == 0 else job_pb2.JOB_STATUS_FAILED
        assert result.status == expected
    assert leftovers(podman_client, settings.node_id) == ([], [])
