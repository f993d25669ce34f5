"""Warm single-use sandboxes on real Podman (SPEC §4.10): single use, isolation between
jobs, the pool's bounds, settings changes, broken sandboxes, close and start-up cleanup.
The sandbox rules on the warm path are test_runner_podman.py's, run warm."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from podman import PodmanClient

from cynode.jobs.v1 import job_pb2
from cynode.node.runtime import JobRunner, SandboxSettings, WarmSandboxPool, ops, remove_leftovers
from cynode.node.runtime.labels import LABEL_ROLE, LABEL_WARM
from cynode.node.runtime.warm_sandbox import (
    WARM_RUNNER,
    available_memory_mb,
    sandbox_class,
)
from tests.node.runtime.conftest import leftovers, make_spec

pytestmark = [pytest.mark.podman]

COMPLETED = job_pb2.JOB_STATUS_COMPLETED
JOBS = int(os.environ.get("CYNODE_TEST_WARM_JOBS", "100"))


@pytest.fixture
async def pool(podman_client: PodmanClient, clean_node: None) -> AsyncIterator[WarmSandboxPool]:
    # clean_node comes first, so its check runs after the pool is closed.
    pool = WarmSandboxPool(podman_client, size=2)
    yield pool
    await pool.close()


async def filled(pool: WarmSandboxPool, settings: SandboxSettings) -> list[str]:
    """Fills the pool and waits for it: the ids of its ready containers."""
    pool.fill(settings)
    await pool.wait_filled()
    return [item.container_id or "" for item in pool._ready]


# Each job leaves a marker in /workspace and /tmp and a background process with its own
# number, then lists what it can see: its files, and every process's command line.
ISOLATION_PROBE = [
    'echo "$CYNODE_JOB_ID" > "/workspace/mark-$N"; echo "$CYNODE_JOB_ID" > "/tmp/mark-$N"',
    'sleep "10$N" & echo workspace: $(ls -A /workspace); echo tmp: $(ls -A /tmp)',
    # The background child shows the shell's cmdline until it has exec'd sleep (CI3 read
    # it that early once under load): look again, a bounded number of times, until one is
    # there; then print every sleep this job can see.
    "for t in $(seq 400); do s=$(for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline"
    ' 2>/dev/null; echo; done | grep \'^sleep\'); [ -n "$s" ] && break; done; echo "$s"',
]


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_100_jobs_on_a_pool_of_2_are_100_containers_that_see_only_their_own(
    podman_client: PodmanClient, pool: WarmSandboxPool, settings: SandboxSettings
) -> None:
    await filled(pool, settings)
    slots = asyncio.Semaphore(2)

    async def one(i: int) -> tuple[job_pb2.JobResult, JobRunner]:
        async with slots:
            runner = JobRunner(podman_client, settings, warm_sandboxes=pool)
            spec = make_spec(commands=ISOLATION_PROBE, env={"N": str(i)})
            return await runner.run(spec), runner

    outcomes = await asyncio.gather(*(one(i) for i in range(JOBS)))
    ids = set()
    for i, (result, runner) in enumerate(outcomes):
        assert result.status == COMPLETED, result.stderr
        assert runner.path == "warm"
        ids.add(runner.container_id)
        lines = result.stdout.decode().splitlines()
        assert lines[0] == f"workspace: mark-{i}"
        assert lines[1] == f"tmp: mark-{i}"
        assert [line.strip() for line in lines[2:]] == [f"sleep 10{i}"], lines
    assert len(ids) == JOBS and None not in ids
    assert (pool.hits, pool.misses) == (JOBS, 0)
    await pool.wait_filled()
    # Only the pool's two ready ones are left, none of the used ones.
    containers, volumes = leftovers(podman_client, settings.node_id)
    assert len(containers) == len(volumes) == 2
    assert not ids & {item.container_id for item in pool._ready}


async def test_a_warm_sandbox_keeps_the_rules_and_waits_for_its_job(
    podman_client: PodmanClient, pool: WarmSandboxPool, settings: SandboxSettings
) -> None:
    small = dataclasses.replace(settings, memory_mb=256, cpus=0.5, pids=64)
    [cid, _] = await filled(pool, small)
    attrs = podman_client.containers.get(cid).attrs
    host = attrs["HostConfig"]
    assert attrs["State"]["Running"] and attrs["Config"]["Cmd"] == [WARM_RUNNER]
    assert attrs["Config"]["OpenStdin"] and attrs["Config"]["User"] == "10000:10000"
    assert host["NetworkMode"] == "none" and host["ReadonlyRootfs"]
    assert host["Memory"] == 256 << 20 and host["PidsLimit"] == 64
    assert host["CpuQuota"] == 50_000 and "no-new-privileges" in host["SecurityOpt"]
    assert attrs["Config"]["Labels"][LABEL_ROLE] == "sandbox"
    assert attrs["Config"]["Labels"][LABEL_WARM] == pool.pool_id
    assert not any(e.startswith("CYNODE_") for e in attrs["Config"]["Env"])
    assert pool.key == sandbox_class(small)


async def test_a_settings_change_discards_the_old_class(
    podman_client: PodmanClient, pool: WarmSandboxPool, settings: SandboxSettings
) -> None:
    old = set(await filled(pool, settings))
    bigger = dataclasses.replace(settings, memory_mb=1024)
    assert await pool.take(bigger) is None  # not made for these: a miss, and a refill
    assert pool.misses == 1
    new = set(await filled(pool, bigger))
    assert len(new) == 2 and not old & new
    await pool.wait_filled()
    for _ in range(100):
        if not any(podman_client.containers.exists(cid) for cid in old):
            break
        await asyncio.sleep(0.05)
    assert not any(podman_client.containers.exists(cid) for cid in old)


async def test_a_job_of_another_image_or_one_cancelled_early_takes_no_warm_sandbox(
    podman_client: PodmanClient, pool: WarmSandboxPool, settings: SandboxSettings
) -> None:
    ready = await filled(pool, settings)
    runner = JobRunner(podman_client, settings, warm_sandboxes=pool)
    result = await runner.run(make_spec(commands=["true"], image="localhost/cynode-base:latest"))
    assert (result.status, runner.path) == (COMPLETED, "cold")
    early = JobRunner(podman_client, settings, warm_sandboxes=pool)
    await early.cancel()
    assert (await early.run(make_spec(commands=["true"]))).status == job_pb2.JOB_STATUS_CANCELED
    assert (pool.hits, pool.misses, pool.ready_count) == (0, 1, 2)
    assert [item.container_id for item in pool._ready] == ready
    # The same image named explicitly is the node's class.
    same = JobRunner(podman_client, settings, warm_sandboxes=pool)
    result = await same.run(make_spec(commands=["true"], image=settings.image))
    assert (result.status, same.path, pool.hits) == (COMPLETED, "warm", 1)


async def test_a_broken_warm_sandbox_is_removed_and_the_job_goes_cold(
    podman_client: PodmanClient, pool: WarmSandboxPool, settings: SandboxSettings
) -> None:
    pool.size = 1
    [cid] = await filled(pool, settings)
    ops.stop_container(podman_client, cid, 0)
    runner = JobRunner(podman_client, settings, warm_sandboxes=pool)
    result = await runner.run(make_spec(commands=["echo fine"]))
    assert (result.status, result.stdout, runner.path) == (COMPLETED, b"fine\n", "cold")
    assert (pool.hits, pool.misses) == (0, 1)
    await pool.wait_filled()
    for _ in range(100):
        if not podman_client.containers.exists(cid):
            break
        await asyncio.sleep(0.05)
    assert not podman_client.containers.exists(cid)


async def test_a_failed_handoff_is_a_runtime_error_and_leaves_nothing(
    podman_client: PodmanClient,
    pool: WarmSandboxPool,
    settings: SandboxSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cynode.node.runtime import output_hook

    pool.size = 1
    await filled(pool, settings)

    def broken(self: output_hook.OutputAttach, data: bytes) -> None:
        raise BrokenPipeError("the handoff's write failed")

    monkeypatch.setattr(output_hook.OutputAttach, "send", broken)
    runner = JobRunner(podman_client, settings, warm_sandboxes=pool)
    result = await runner.run(make_spec(commands=["echo never"]))
    assert (result.status, runner.path) == (job_pb2.JOB_STATUS_FAILED, "warm")
    assert result.reason == "error: the handoff's write failed"
    assert runner.container_id is not None
    assert not podman_client.containers.exists(runner.container_id)


async def test_an_unused_pool_lets_its_sandboxes_go_until_the_next_job(
    podman_client: PodmanClient, pool: WarmSandboxPool, settings: SandboxSettings
) -> None:
    pool.idle_s = 1.0
    await filled(pool, settings)
    for _ in range(300):  # ~1 s idle, then the removals
        if pool.dormant and leftovers(podman_client, settings.node_id) == ([], []):
            break
        await asyncio.sleep(0.02)
    assert pool.dormant and pool.ready_count == 0 and pool.status().available == 0
    assert leftovers(podman_client, settings.node_id) == ([], [])
    pool.fill(settings)  # as after a config change: still nothing while unused
    assert not pool._making
    # The next job goes cold and wakes the pool; the one after finds a warm sandbox.
    first = JobRunner(podman_client, settings, warm_sandboxes=pool)
    assert (await first.run(make_spec(commands=["true"]))).status == COMPLETED
    assert first.path == "cold" and not pool.dormant
    await pool.wait_filled()
    second = JobRunner(podman_client, settings, warm_sandboxes=pool)
    assert (await second.run(make_spec(commands=["true"]))).status == COMPLETED
    assert second.path == "warm"
    # A take within the idle time keeps the pool: idle is counted from the last take. (A
    # longer idle time from here: refilling alone may take over a second on a busy host.)
    pool.idle_s = 5.0
    await pool.wait_filled()
    await asyncio.sleep(0.6)
    item = await pool.take(settings)
    assert item is not None
    await pool.remove(item)
    await asyncio.sleep(0.6)
    assert not pool.dormant


async def test_closing_removes_ready_sandboxes_and_those_in_the_making(
    podman_client: PodmanClient, pool: WarmSandboxPool, settings: SandboxSettings
) -> None:
    await filled(pool, settings)
    pool.size = 3
    pool.fill(settings)  # a third one is in the making when the node stops
    await asyncio.sleep(0.05)
    await pool.close()
    assert leftovers(podman_client, settings.node_id) == ([], [])
    pool.fill(settings)
    assert await pool.take(settings) is None and not pool._making


async def test_start_up_cleanup_removes_warm_sandboxes_of_a_node_that_died(
    podman_client: PodmanClient, pool: WarmSandboxPool, settings: SandboxSettings
) -> None:
    await filled(pool, settings)
    report = await remove_leftovers(podman_client, settings.node_id)
    assert (len(report.containers), len(report.volumes)) == (2, 2)


async def test_a_sandbox_that_cannot_be_made_is_counted_and_leaves_nothing(
    podman_client: PodmanClient, pool: WarmSandboxPool, settings: SandboxSettings
) -> None:
    broken = dataclasses.replace(settings, image="localhost/cynode-no-such-image:latest")
    assert await filled(pool, broken) == []
    assert (pool.failed, pool.made, pool.ready_count) == (2, 0, 0)
    assert leftovers(podman_client, settings.node_id) == ([], [])


def test_the_pool_is_bounded_by_job_slots_and_memory(podman_client: PodmanClient) -> None:
    settings = SandboxSettings(node_id="n", memory_mb=512)
    key = sandbox_class(settings)
    assert key is not None
    assert WarmSandboxPool(podman_client, size=4, memory_mb=lambda: None).target(key) == 4
    assert (
        WarmSandboxPool(podman_client, size=4, max_jobs=2, memory_mb=lambda: None).target(key) == 2
    )
    assert WarmSandboxPool(podman_client, size=4, memory_mb=lambda: 1100).target(key) == 2
    assert WarmSandboxPool(podman_client, size=4, memory_mb=lambda: 100).target(key) == 0
    assert sandbox_class(SandboxSettings()) is None  # no node id yet: nothing is made
    assert "mem=512m cpus=1 pids=128" in key.label


def test_available_memory_is_read_from_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 8000000 kB\nMemAvailable: 2048000 kB\n")
    assert available_memory_mb(meminfo) == 2000
    meminfo.write_text("MemTotal: 8000000 kB\n")
    assert available_memory_mb(meminfo) is None
    assert available_memory_mb(tmp_path / "missing") is None
