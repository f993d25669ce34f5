"""Collecting artifacts from a real sandbox: what lands in the spool and the result.

Every test runs cold and warm (the `make_runner` fixture): in a warm sandbox the runner
reports the job's end and whether out/ holds anything (SPEC §4.10); a full out/ is
read once the container has stopped, an empty one not at all."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from pathlib import Path

import pytest

from cynode.jobs.v1 import job_pb2
from cynode.node.artifacts import ArtifactSpool
from cynode.node.runtime import SandboxSettings
from tests.node.runtime.conftest import RunnerMaker, make_spec

pytestmark = [pytest.mark.podman, pytest.mark.usefixtures("no_leftovers")]

MAKE_OUT = r"""#!/bin/sh
set -e
mkdir -p out/data/deep
printf 'report' > out/report.txt
head -c 100000 /dev/urandom > out/data/part-1.bin
printf 'x' > out/data/deep/z.csv
ln -s /etc/passwd out/passwd-link
ln -s /etc out/etc-link
mkfifo out/fifo
printf 'outside' > not-out.txt
sha256sum out/data/part-1.bin
"""


@pytest.fixture
def with_spool(settings: SandboxSettings, tmp_path: Path) -> SandboxSettings:
    return dataclasses.replace(settings, artifact_dir=str(tmp_path / "artifacts"))


async def test_regular_files_under_out_are_collected_and_nothing_else(
    make_runner: RunnerMaker, with_spool: SandboxSettings
) -> None:
    spec = make_spec(script=MAKE_OUT)
    result = await (await make_runner(with_spool)).run(spec)
    assert result.status == job_pb2.JOB_STATUS_COMPLETED, result.stderr
    found = {a.name: a for a in result.artifacts.artifacts}
    assert sorted(found) == ["data/deep/z.csv", "data/part-1.bin", "report.txt"]
    assert not result.artifacts.truncated
    printed = result.stdout.split()[0].decode()
    assert found["data/part-1.bin"].sha256 == printed
    assert found["data/part-1.bin"].size_bytes == 100000
    assert found["report.txt"].content_type == "text/plain"
    assert found["data/deep/z.csv"].content_type == "text/csv"
    spool = ArtifactSpool(Path(with_spool.artifact_dir))
    pending = spool.pending(spec.job_id, spec.attempt)
    assert {p.artifact.name for p in pending} == set(found)
    for item in pending:
        data = item.path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == item.artifact.sha256
        assert b"root:x:0:0" not in data
    assert spool.read_set(spec.job_id, spec.attempt) == result.artifacts


async def test_limits_truncate_the_set_but_not_the_job(
    make_runner: RunnerMaker, with_spool: SandboxSettings
) -> None:
    settings = dataclasses.replace(
        with_spool, artifact_max_file_bytes=5000, artifact_max_job_bytes=7000
    )
    script = (
        "mkdir -p out && head -c 6000 /dev/zero > out/big && head -c 4000 /dev/zero > out/a"
        " && head -c 4000 /dev/zero > out/b && head -c 100 /dev/zero > out/c; exit 3"
    )
    result = await (await make_runner(settings)).run(make_spec(commands=[script]))
    assert (result.status, result.exit_code) == (job_pb2.JOB_STATUS_FAILED, 3)
    names = sorted(a.name for a in result.artifacts.artifacts)
    assert "big" not in names and len(names) == 2 and "c" in names
    assert sum(a.size_bytes for a in result.artifacts.artifacts) <= 7000
    assert result.artifacts.truncated
    assert result.artifacts.truncated_reason.startswith(("file over 5000", "artifacts over 7000"))


async def test_background_writers_die_with_the_job_and_miss_the_set(
    make_runner: RunnerMaker, with_spool: SandboxSettings
) -> None:
    # As when a cold sandbox's main process exits: what it left running is killed, so
    # a file written after the end is not collected (the warm runner kills it itself).
    script = "mkdir -p out; echo x > out/x; (sleep 1; echo late > out/late) & exit 0"
    result = await (await make_runner(with_spool)).run(make_spec(commands=[script]))
    assert result.status == job_pb2.JOB_STATUS_COMPLETED
    assert [a.name for a in result.artifacts.artifacts] == ["x"]


async def test_out_as_a_symlink_or_missing_gives_an_empty_set(
    make_runner: RunnerMaker, with_spool: SandboxSettings
) -> None:
    linked = await (await make_runner(with_spool)).run(make_spec(commands=["ln -s /etc out"]))
    assert linked.status == job_pb2.JOB_STATUS_COMPLETED
    assert list(linked.artifacts.artifacts) == [] and not linked.artifacts.truncated
    missing = await (await make_runner(with_spool)).run(make_spec(commands=["true"]))
    assert list(missing.artifacts.artifacts) == []
    assert ArtifactSpool(Path(with_spool.artifact_dir)).jobs() == []


async def test_a_canceled_job_is_not_collected_a_timed_out_one_is(
    make_runner: RunnerMaker, with_spool: SandboxSettings
) -> None:
    script = "mkdir -p out && echo x > out/x && exec sleep 60"
    timed = await (await make_runner(with_spool)).run(
        make_spec(commands=[script], timeout_seconds=2)
    )
    assert timed.reason == "timeout"
    assert [a.name for a in timed.artifacts.artifacts] == ["x"]
    started = asyncio.Event()

    async def on_started(_: object) -> None:
        started.set()

    runner = await make_runner(with_spool, on_started=on_started)
    run = asyncio.create_task(runner.run(make_spec(commands=[script])))
    await asyncio.wait_for(started.wait(), 60)
    await asyncio.sleep(0.5)  # out/x is written by then; a cancel still skips it
    await runner.cancel()
    canceled = await run
    assert canceled.status == job_pb2.JOB_STATUS_CANCELED
    assert not canceled.HasField("artifacts")


async def test_a_collection_that_cannot_start_leaves_the_job_its_status(
    make_runner: RunnerMaker, settings: SandboxSettings, tmp_path: Path
) -> None:
    # The spool's directory cannot be made (a file is in its place): the set says why,
    # and the job that ended well stays completed (SPEC §4.11).
    blocked = tmp_path / "artifacts"
    blocked.write_text("not a directory")
    spooled = dataclasses.replace(settings, artifact_dir=str(blocked))
    result = await (await make_runner(spooled)).run(make_spec(script=MAKE_OUT))
    assert (result.status, result.exit_code) == (job_pb2.JOB_STATUS_COMPLETED, 0)
    assert list(result.artifacts.artifacts) == []
    assert result.artifacts.truncated
    assert result.artifacts.truncated_reason.startswith("collection failed: ")
