"""The bounded /workspace (SPEC §4.4): a job writing far past it (3 GiB into 64 MiB) gets
ENOSPC and ends by its own error; the next job on the node runs normally; nothing of
either is left (no volume, no image, no loop device)."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import time
from pathlib import Path

import pytest

from cynode.jobs.v1 import job_pb2
from cynode.node.runtime import SandboxSettings
from cynode.node.runtime.workspace_image import make_image, remove_images, tools_present
from tests.node.runtime.conftest import RunnerMaker, make_spec

pytestmark = [pytest.mark.podman, pytest.mark.usefixtures("no_leftovers")]

WRITE_3G = "head -c 3221225472 /dev/zero > /workspace/big; echo status=$? >&2; exit 7"


def _loops(image_dir: Path) -> list[str]:
    listed = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=False)
    return [line for line in listed.stdout.splitlines() if str(image_dir) in line]


@pytest.fixture
def bounded(settings: SandboxSettings, tmp_path: Path) -> SandboxSettings:
    assert tools_present() == [], "e2fsprogs is needed (apt-get install e2fsprogs)"
    images = tmp_path / "workspaces"
    images.mkdir()
    return dataclasses.replace(settings, workspace_mb=64, workspace_dir=str(images))


async def test_a_job_writing_past_the_bound_gets_enospc_and_the_next_runs(
    make_runner: RunnerMaker, bounded: SandboxSettings
) -> None:
    """On both paths: a warm sandbox's workspace is bounded like a cold one's."""
    images = Path(bounded.workspace_dir)
    started = time.monotonic()
    hog = await (await make_runner(bounded)).run(make_spec(commands=[WRITE_3G]))
    took = time.monotonic() - started
    assert (hog.status, hog.exit_code) == (job_pb2.JOB_STATUS_FAILED, 7)
    assert b"No space left on device" in hog.stderr
    assert b"status=1" in hog.stderr
    assert took < 60, f"the bound should stop it early, took {took:.1f}s"
    after = await (await make_runner(bounded)).run(
        make_spec(
            commands=["df -m /workspace | tail -1; ls -A /workspace; echo fine > /workspace/x"]
        )
    )
    assert after.status == job_pb2.JOB_STATUS_COMPLETED, after.stderr
    size_mb = int(after.stdout.split()[1])
    assert 50 <= size_mb <= 64, after.stdout
    assert b"lost+found" not in after.stdout
    if make_runner.mode == "cold":
        # (A warm pool makes the next sandbox, with its image, as soon as one is taken.)
        assert not any(await asyncio.to_thread(lambda: list(images.iterdir())))
        assert _loops(images) == []


async def test_the_workspace_belongs_to_the_sandbox_user_and_keeps_artifacts(
    make_runner: RunnerMaker, bounded: SandboxSettings, tmp_path: Path
) -> None:
    with_spool = dataclasses.replace(bounded, artifact_dir=str(tmp_path / "artifacts"))
    script = (
        "stat -c %u /workspace && mkdir -p out/d && echo hi > out/hi.txt && echo x > out/d/y"
        " && ln -s /etc/passwd out/pw && mkfifo out/ff && ln out/hi.txt out/hard"
    )
    started = time.monotonic()
    result = await (await make_runner(with_spool)).run(make_spec(commands=[script]))
    assert time.monotonic() - started < 30
    assert result.status == job_pb2.JOB_STATUS_COMPLETED, result.stderr
    assert result.stdout.strip() == b"10000"
    assert sorted(a.name for a in result.artifacts.artifacts) == ["d/y", "hard", "hi.txt"]
    assert not result.artifacts.truncated
    linked = await (await make_runner(with_spool)).run(make_spec(commands=["ln -s /etc out"]))
    assert list(linked.artifacts.artifacts) == [] and not linked.artifacts.truncated


def test_image_helpers(tmp_path: Path) -> None:
    image = tmp_path / "a.img"
    make_image(image, 4)
    assert image.stat().st_size == 4 * 1024 * 1024
    assert image.stat().st_blocks * 512 < 4 * 1024 * 1024  # sparse
    (tmp_path / "b.img").write_bytes(b"")
    assert remove_images(tmp_path) == 2 and remove_images(tmp_path / "none") == 0
