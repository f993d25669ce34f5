"""Output through the attach stream, against real Podman: nothing lost at the start or
the end of a job, streams apart, the cap, and the exit state without Podman's wait."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator

import pytest
from podman import PodmanClient

from cynode.jobs.v1 import job_pb2
from cynode.node.runtime import JobRunner, PodmanService, SandboxSettings, ops
from cynode.node.runtime.context import OnOutput
from cynode.node.runtime.hooks import Hook
from cynode.node.runtime.output import OutputCapture
from cynode.node.runtime.output_hook import OutputAttach, OutputHook
from cynode.node.runtime.warm_sandbox import WarmSandbox
from tests.fixtures.podman import SANDBOX_IMAGE
from tests.node.runtime.conftest import make_spec

pytestmark = [pytest.mark.podman, pytest.mark.usefixtures("no_leftovers")]

COMPLETED = job_pb2.JOB_STATUS_COMPLETED
FAILED = job_pb2.JOB_STATUS_FAILED
Chunks = list[tuple[str, bytes, int]]


def recorder() -> tuple[Chunks, OnOutput]:
    got: Chunks = []

    async def on_output(stream: str, data: bytes, offset: int) -> None:
        got.append((stream, data, offset))

    return got, on_output


def joined(got: Chunks, stream: str) -> bytes:
    return b"".join(d for s, d, _ in got if s == stream)


async def test_output_of_the_first_instant_is_never_lost(
    podman_client: PodmanClient, settings: SandboxSettings
) -> None:
    # The job writes before anything could follow it from outside, then exits at once.
    for _ in range(5):
        got, on_output = recorder()
        spec = make_spec(commands=["printf first; printf err >&2"])
        result = await JobRunner(podman_client, settings, on_output=on_output).run(spec)
        assert (result.status, result.stdout, result.stderr) == (COMPLETED, b"first", b"err")
        assert (joined(got, "stdout"), joined(got, "stderr")) == (b"first", b"err")


async def test_interleaved_streams_stay_apart_and_complete(
    podman_client: PodmanClient, settings: SandboxSettings
) -> None:
    got, on_output = recorder()
    spec = make_spec(commands=["for i in $(seq 1 200); do echo out$i; echo err$i >&2; done"])
    result = await JobRunner(podman_client, settings, on_output=on_output).run(spec)
    want_out = b"".join(b"out%d\n" % i for i in range(1, 201))
    want_err = b"".join(b"err%d\n" % i for i in range(1, 201))
    assert (result.stdout, result.stderr) == (want_out, want_err)
    assert (joined(got, "stdout"), joined(got, "stderr")) == (want_out, want_err)


async def test_much_output_then_an_immediate_exit_keeps_every_byte_and_the_code(
    podman_client: PodmanClient, settings: SandboxSettings
) -> None:
    got, on_output = recorder()
    spec = make_spec(commands=["head -c 200000 /dev/zero | tr '\\0' z; printf end >&2; exit 3"])
    result = await JobRunner(podman_client, settings, on_output=on_output).run(spec)
    assert (result.status, result.exit_code) == (FAILED, 3)
    assert result.stdout == b"z" * 200000 and not result.stdout_truncated
    assert result.stderr == b"end"
    assert joined(got, "stdout") == result.stdout
    offsets = [o for s, _, o in got if s == "stdout"]
    sizes = [len(d) for s, d, _ in got if s == "stdout"]
    assert offsets == [sum(sizes[:i]) for i in range(len(sizes))]


async def test_the_cap_cuts_the_result_and_the_live_stream_alike(
    podman_client: PodmanClient, settings: SandboxSettings
) -> None:
    capped = dataclasses.replace(settings, max_output_bytes=1000)
    got, on_output = recorder()
    spec = make_spec(commands=["head -c 3000000 /dev/zero | tr '\\0' q; printf e >&2"])
    result = await JobRunner(podman_client, capped, on_output=on_output).run(spec)
    assert result.status == COMPLETED
    assert (result.stdout, result.stdout_truncated) == (b"q" * 1000, True)
    assert (result.stderr, result.stderr_truncated) == (b"e", False)
    assert joined(got, "stdout") == b"q" * 1000


async def test_output_reaches_on_output_while_the_job_still_runs(
    podman_client: PodmanClient, settings: SandboxSettings
) -> None:
    first = asyncio.Event()

    async def on_output(stream: str, data: bytes, offset: int) -> None:
        first.set()

    runner = JobRunner(podman_client, settings, on_output=on_output)
    job = asyncio.create_task(runner.run(make_spec(commands=["printf early", "sleep 600"])))
    await asyncio.wait_for(first.wait(), 60)
    assert not job.done()
    await runner.cancel()
    result = await asyncio.wait_for(job, 60)
    assert (result.status, result.stdout) == (job_pb2.JOB_STATUS_CANCELED, b"early")


@pytest.fixture
def impatient_client(podman_service: PodmanService) -> Iterator[PodmanClient]:
    """A client whose calls time out after 2 s by default (the node's is 60 s)."""
    with podman_service.client(timeout=2) as client:
        yield client


async def test_a_quiet_job_outlasts_the_clients_default_timeout(
    impatient_client: PodmanClient, settings: SandboxSettings
) -> None:
    spec = make_spec(commands=["sleep 4", "echo done"])
    result = await JobRunner(impatient_client, settings).run(spec)
    assert (result.status, result.stdout) == (COMPLETED, b"done\n")


class _NoOutputRunner(JobRunner):
    def make_hooks(
        self, needs_inference: bool = False, warm: WarmSandbox | None = None
    ) -> list[Hook]:
        hooks = super().make_hooks(needs_inference, warm)
        return [h for h in hooks if not isinstance(h, OutputHook)]


async def test_without_an_output_stream_the_exit_code_comes_from_podmans_wait(
    podman_client: PodmanClient, settings: SandboxSettings
) -> None:
    result = await _NoOutputRunner(podman_client, settings).run(make_spec(commands=["exit 7"]))
    assert (result.status, result.exit_code, result.stdout) == (FAILED, 7, b"")


def test_ended_state_is_none_while_running_and_the_code_once_stopped(
    podman_client: PodmanClient, node_id: str
) -> None:
    container = podman_client.containers.create(
        SANDBOX_IMAGE,
        ["sh", "-c", "sleep 600"],
        network_mode="none",
        init=True,
        labels={"cynode.node_id": node_id},
    )
    try:
        ops.start_container(podman_client, container.id)
        ops.start_container(podman_client, container.id)  # already running: quiet
        assert ops.ended_state(podman_client, container.id, tries=2, pause_s=0) is None
        ops.stop_container(podman_client, container.id, 0)
        state = ops.ended_state(podman_client, container.id)
        assert state is not None and state.exit_code == 137 and not state.oom_killed
    finally:
        ops.remove_container(podman_client, container.id)


def test_attach_to_a_missing_container_fails_and_run_needs_open(
    podman_client: PodmanClient,
) -> None:
    attach = OutputAttach(podman_client, "no-such-container", OutputCapture(10), print)
    with pytest.raises(Exception, match=r"no such container|404"):
        attach.open()
    with pytest.raises(RuntimeError, match="open"):
        attach.run()
    attach.close()  # nothing open: a no-op
