"""JobRunner against the real Podman service: what a job can and cannot do.

Every test runs twice (the `make_runner` fixture): on the cold path (the job's own
container) and on the warm path (a warm single-use sandbox, SPEC §4.10), which must keep
every sandbox rule the same."""

from __future__ import annotations

import asyncio
import dataclasses
import struct
import threading
from datetime import datetime

import pytest
from podman import PodmanClient

from cynode.jobs.v1 import job_pb2
from cynode.node.runtime import JobRunner, SandboxSettings, ops
from tests.node.runtime.conftest import RunnerMaker, leftovers, make_spec

pytestmark = [pytest.mark.podman, pytest.mark.usefixtures("no_leftovers")]

COMPLETED = job_pb2.JOB_STATUS_COMPLETED
FAILED = job_pb2.JOB_STATUS_FAILED
CANCELED = job_pb2.JOB_STATUS_CANCELED


async def run(
    make_runner: RunnerMaker, settings: SandboxSettings, spec: job_pb2.JobSpec
) -> job_pb2.JobResult:
    return await (await make_runner(settings)).run(spec)


async def test_echo_hi_completes(
    make_runner: RunnerMaker, podman_client: PodmanClient, settings: SandboxSettings
) -> None:
    spec = make_spec(commands=["echo hi"])
    result = await run(make_runner, settings, spec)
    assert (result.status, result.exit_code, result.reason) == (COMPLETED, 0, "")
    assert (result.stdout, result.stderr) == (b"hi\n", b"")
    assert (result.job_id, result.attempt, result.node_id) == (spec.job_id, 1, settings.node_id)
    assert result.HasField("started_at") and result.HasField("ended_at")
    assert not result.stdout_truncated and not result.stderr_truncated


async def test_non_zero_exit_fails_with_its_code(
    make_runner: RunnerMaker, podman_client: PodmanClient, settings: SandboxSettings
) -> None:
    result = await run(make_runner, settings, make_spec(commands=["echo oops >&2; exit 3"]))
    assert (result.status, result.exit_code, result.reason) == (FAILED, 3, "exit_code")
    assert result.stderr == b"oops\n"


async def test_no_network_from_the_sandbox(
    make_runner: RunnerMaker, podman_client: PodmanClient, settings: SandboxSettings
) -> None:
    connect = "python3 -c \"import socket; socket.create_connection(('1.1.1.1', 53), timeout=3)\""
    result = await run(make_runner, settings, make_spec(commands=["cat /proc/net/dev", connect]))
    assert result.status == FAILED and result.exit_code == 1
    assert b"Network is unreachable" in result.stderr
    interfaces = [line.split(b":")[0].strip() for line in result.stdout.splitlines()[2:]]
    assert interfaces == [b"lo"]


async def test_runs_as_uid_10000_without_capabilities(
    make_runner: RunnerMaker, podman_client: PodmanClient, settings: SandboxSettings
) -> None:
    spec = make_spec(
        commands=["id -u; id -g", "grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status"]
    )
    result = await run(make_runner, settings, spec)
    assert result.status == COMPLETED
    assert result.stdout.splitlines() == [
        b"10000",
        b"10000",
        b"CapEff:\t0000000000000000",
        b"CapBnd:\t0000000000000000",
        b"NoNewPrivs:\t1",
    ]


async def test_root_is_read_only_workspace_and_tmp_are_writable(
    make_runner: RunnerMaker, podman_client: PodmanClient, settings: SandboxSettings
) -> None:
    script = (
        "for d in / /etc /var/tmp /workspace /tmp; do\n"
        '  if touch "$d/probe" 2>/dev/null; then echo "$d rw"; else echo "$d ro"; fi\n'
        "done\n"
        "pwd\n"
    )
    result = await run(make_runner, settings, make_spec(script=script))
    assert result.stdout.decode().splitlines() == [
        "/ ro",
        "/etc ro",
        "/var/tmp ro",
        "/workspace rw",
        "/tmp rw",
        "/workspace",
    ]


async def test_fork_bomb_stops_at_the_pids_limit(
    make_runner: RunnerMaker, podman_client: PodmanClient, settings: SandboxSettings
) -> None:
    bomb = (
        "import os, time\n"
        "children = 0\n"
        "while children < 1000:\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError as e:\n"
        "        print('fork refused after', children, e.errno)\n"
        "        break\n"
        "    if pid == 0:\n"
        "        time.sleep(30)\n"
        "        os._exit(0)\n"
        "    children += 1\n"
    )
    limited = dataclasses.replace(settings, pids=32)
    spec = make_spec(script="#!/usr/bin/python3\n" + bomb, timeout_seconds=60)
    result = await run(make_runner, limited, spec)
    assert result.status == COMPLETED, result.stderr
    words = result.stdout.split()
    assert words[:3] == [b"fork", b"refused", b"after"]
    assert 0 < int(words[3]) < 32
    assert int(words[4]) == 11  # EAGAIN: the pids cgroup said no
    # the runner (and Podman) are fine afterwards
    again = await run(make_runner, limited, make_spec(commands=["echo alive"]))
    assert again.stdout == b"alive\n"


async def test_memory_over_the_limit_is_oom(
    make_runner: RunnerMaker, podman_client: PodmanClient, settings: SandboxSettings
) -> None:
    small = dataclasses.replace(settings, memory_mb=256)
    spec = make_spec(commands=["python3 -c 'b = bytearray(1 << 30); print(len(b))'"])
    result = await run(make_runner, small, spec)
    assert (result.status, result.reason, result.exit_code) == (FAILED, "oom", 137)
    assert result.stdout == b""


async def test_allocation_under_the_limit_is_fine(
    make_runner: RunnerMaker, podman_client: PodmanClient, settings: SandboxSettings
) -> None:
    small = dataclasses.replace(settings, memory_mb=256)
    spec = make_spec(commands=["python3 -c 'b = bytearray(64 << 20); print(len(b))'"])
    result = await run(make_runner, small, spec)
    assert (result.status, result.stdout) == (COMPLETED, b"67108864\n")


@pytest.mark.timeout(30)
async def test_timeout_stops_the_job(
    make_runner: RunnerMaker, podman_client: PodmanClient, settings: SandboxSettings
) -> None:
    spec = make_spec(commands=["echo started", "sleep 600"], timeout_seconds=2)
    runner = await make_runner(settings)
    result = await runner.run(spec)
    assert (result.status, result.reason) == (FAILED, "timeout")
    assert result.stdout == b"started\n"
    # Gone already (a warm pool's refill is the pool's, and goes when the pool closes).
    containers, volumes = leftovers(podman_client, settings.node_id)
    assert runner.container_id is not None
    assert not podman_client.containers.exists(runner.container_id)
    assert len(containers) == len(volumes) == (1 if make_runner.mode == "warm" else 0)


async def test_output_is_capped_by_bytes(
    make_runner: RunnerMaker, podman_client: PodmanClient, settings: SandboxSettings
) -> None:
    chunks: dict[str, list[tuple[bytes, int]]] = {"stdout": [], "stderr": []}

    async def on_output(stream: str, data: bytes, offset: int) -> None:
        chunks[stream].append((data, offset))

    spec = make_spec(commands=["head -c 1000000 /dev/zero | tr '\\0' a; echo tail >&2"])
    result = await (await make_runner(settings, on_output=on_output)).run(spec)
    assert result.status == COMPLETED
    assert result.stdout == b"a" * 262144 and result.stdout_truncated
    assert result.stderr == b"tail\n" and not result.stderr_truncated
    # the live stream is exactly the kept bytes, in order, offsets contiguous
    assert b"".join(d for d, _ in chunks["stdout"]) == result.stdout
    offsets = [o for _, o in chunks["stdout"]]
    sizes = [len(d) for d, _ in chunks["stdout"]]
    assert offsets == [sum(sizes[:i]) for i in range(len(sizes))]
    assert chunks["stderr"] == [(b"tail\n", 0)]


async def test_a_custom_cap(
    make_runner: RunnerMaker, podman_client: PodmanClient, settings: SandboxSettings
) -> None:
    capped = dataclasses.replace(settings, max_output_bytes=5)
    result = await run(make_runner, capped, make_spec(commands=["printf 12345", "printf 6"]))
    assert (result.stdout, result.stdout_truncated) == (b"12345", True)


async def test_cancel_stops_a_running_job(
    make_runner: RunnerMaker, podman_client: PodmanClient, settings: SandboxSettings
) -> None:
    started = asyncio.Event()

    async def on_started(at: datetime) -> None:
        assert at.tzinfo is not None
        started.set()

    spec = make_spec(commands=["sleep 600"])
    runner = await make_runner(settings, on_started=on_started)
    job = asyncio.create_task(runner.run(spec))
    await asyncio.wait_for(started.wait(), 30)
    assert runner.container_id is not None
    container = podman_client.containers.get(runner.container_id)
    assert container.status == "running"
    await runner.cancel()
    container.reload()
    assert container.status in ("exited", "stopped")  # stopped by the time cancel returns
    result = await asyncio.wait_for(job, 30)
    assert (result.status, result.reason) == (CANCELED, "canceled")
    assert not podman_client.containers.exists(runner.container_id)


async def test_cancel_before_run_creates_nothing(
    make_runner: RunnerMaker, podman_client: PodmanClient, settings: SandboxSettings
) -> None:
    runner = await make_runner(settings)
    await runner.cancel("superseded")
    result = await runner.run(make_spec(commands=["echo never"]))
    assert (result.status, result.reason, result.exit_code) == (CANCELED, "superseded", -1)
    assert result.stdout == b""


async def test_cancel_after_the_end_changes_nothing(
    make_runner: RunnerMaker, podman_client: PodmanClient, settings: SandboxSettings
) -> None:
    runner = await make_runner(settings)
    result = await runner.run(make_spec(commands=["true"]))
    await runner.cancel()
    assert result.status == COMPLETED


async def test_a_runner_runs_one_job(
    make_runner: RunnerMaker, podman_client: PodmanClient, settings: SandboxSettings
) -> None:
    runner = await make_runner(settings)
    await runner.run(make_spec(commands=["true"]))
    with pytest.raises(RuntimeError, match="one job"):
        await runner.run(make_spec(commands=["true"]))


async def test_commands_stop_at_the_first_failure(
    make_runner: RunnerMaker, podman_client: PodmanClient, settings: SandboxSettings
) -> None:
    spec = make_spec(commands=["echo one", "echo 'two words'", "exit 4", "echo never"])
    result = await run(make_runner, settings, spec)
    assert (result.status, result.exit_code) == (FAILED, 4)
    assert result.stdout == b"one\ntwo words\n"


async def test_script_without_shebang_runs_under_sh(
    make_runner: RunnerMaker, podman_client: PodmanClient, settings: SandboxSettings
) -> None:
    result = await run(make_runner, settings, make_spec(script='echo "$0"\nexit 5\n'))
    assert (result.stdout, result.exit_code) == (b"/workspace/script\n", 5)


async def test_script_with_shebang_is_executed(
    make_runner: RunnerMaker, podman_client: PodmanClient, settings: SandboxSettings
) -> None:
    script = "#!/usr/bin/python3\nimport sys\nprint(sys.argv[0], sys.version_info[0])\n"
    result = await run(make_runner, settings, make_spec(script=script))
    assert (result.status, result.stdout) == (COMPLETED, b"/workspace/script 3\n")


async def test_attachments_land_in_the_workspace_by_safe_name(
    make_runner: RunnerMaker, podman_client: PodmanClient, settings: SandboxSettings
) -> None:
    spec = make_spec(
        commands=["ls -A /workspace", "cat /workspace/data.txt", "stat -c %u /workspace/evil"],
        attachments=[
            job_pb2.Attachment(name="data.txt", content=b"payload\n"),
            job_pb2.Attachment(name="../../../etc/evil", content=b"x"),
        ],
    )
    result = await run(make_runner, settings, spec)
    assert result.status == COMPLETED, result.stderr
    assert result.stdout == b"data.txt\nevil\npayload\n10000\n"


async def test_env_has_the_ids_and_the_job_env(
    make_runner: RunnerMaker, podman_client: PodmanClient, settings: SandboxSettings
) -> None:
    spec = make_spec(commands=["env"], env={"GREETING": "hello"})
    result = await run(make_runner, settings, spec)
    env = dict(line.split("=", 1) for line in result.stdout.decode().splitlines())
    assert env["CYNODE_TASK_ID"] == spec.task_id
    assert env["CYNODE_JOB_ID"] == spec.job_id
    assert env["GREETING"] == "hello"


async def test_container_and_workspace_carry_the_labels(
    make_runner: RunnerMaker, podman_client: PodmanClient, settings: SandboxSettings
) -> None:
    spec = make_spec(commands=["sleep 30"])
    seen: dict[str, dict[str, str]] = {}
    runner: JobRunner

    async def on_started(_: datetime) -> None:
        assert runner.container_id is not None
        container = podman_client.containers.get(runner.container_id)
        [mount] = [m for m in container.attrs["Mounts"] if m["Destination"] == "/workspace"]
        seen["container"] = container.labels
        seen["volume"] = podman_client.volumes.get(mount["Name"]).attrs["Labels"]
        await runner.cancel()

    runner = await make_runner(settings, on_started=on_started)
    result = await runner.run(spec)
    assert result.status == CANCELED
    if make_runner.mode == "cold":
        expected = {
            "cynode.job_id": spec.job_id,
            "cynode.task_id": spec.task_id,
            "cynode.node_id": settings.node_id,
            "cynode.attempt": "1",
        }
    else:
        # Made before any job: the node and the pool that made it (the job is in the log).
        expected = {"cynode.node_id": settings.node_id}
        assert seen["container"]["cynode.warm_pool"] == seen["volume"]["cynode.warm_pool"]
        assert "cynode.job_id" not in seen["container"]
    assert seen["container"].items() >= {**expected, "cynode.role": "sandbox"}.items()
    assert seen["volume"].items() >= {**expected, "cynode.role": "workspace"}.items()


async def test_streams_reach_on_output_separately(
    make_runner: RunnerMaker, podman_client: PodmanClient, settings: SandboxSettings
) -> None:
    got: list[tuple[str, bytes, int]] = []

    async def on_output(stream: str, data: bytes, offset: int) -> None:
        got.append((stream, data, offset))

    spec = make_spec(commands=["echo out", "echo err >&2"])
    await (await make_runner(settings, on_output=on_output)).run(spec)
    assert ("stdout", b"out\n", 0) in got
    assert b"".join(d for s, d, _ in got if s == "stderr") == b"err\n"


async def test_broken_callbacks_do_not_change_the_outcome(
    make_runner: RunnerMaker, podman_client: PodmanClient, settings: SandboxSettings
) -> None:
    async def broken_output(stream: str, data: bytes, offset: int) -> None:
        raise RuntimeError("listener bug")

    async def broken_started(at: datetime) -> None:
        raise RuntimeError("listener bug")

    runner = await make_runner(settings, on_output=broken_output, on_started=broken_started)
    result = await runner.run(make_spec(commands=["echo fine"]))
    assert (result.status, result.stdout) == (COMPLETED, b"fine\n")


async def test_missing_image_is_a_runtime_error(
    make_runner: RunnerMaker, podman_client: PodmanClient, settings: SandboxSettings
) -> None:
    spec = make_spec(commands=["true"], image="localhost/cynode-no-such-image:latest")
    # An image of its own is another sandbox class: never a warm sandbox of the node's.
    result = await (await make_runner(settings, expect="cold")).run(spec)
    assert result.status == FAILED
    assert result.reason.startswith("error: ") and "no-such-image" in result.reason
    assert result.exit_code == -1


async def test_prompt_jobs_are_refused_without_inference(
    make_runner: RunnerMaker, podman_client: PodmanClient, settings: SandboxSettings
) -> None:
    spec = make_spec(input_mode=job_pb2.INPUT_MODE_PROMPT, prompt="hello")
    result = await (await make_runner(settings, expect="cold")).run(spec)
    assert result.status == FAILED
    assert result.reason == "error: this node offers no inference (prompt/use_inference job)"


async def test_the_end_is_reported_when_the_process_exits_not_when_podman_wait_answers(
    make_runner: RunnerMaker,
    podman_client: PodmanClient,
    settings: SandboxSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Podman 4.3's wait polls every 250 ms and answers after the container's cleanup;
    # the runner reads the exit state as soon as the output stream ends instead. With
    # the wait held shut, a runner that needed it would never return.
    release, asked = threading.Event(), threading.Event()

    def held_wait(client: PodmanClient, container_id: str) -> int:
        asked.set()
        release.wait(60)
        raise RuntimeError("podman wait was held shut by the test")

    monkeypatch.setattr(ops, "wait_container", held_wait)
    try:
        result = await asyncio.wait_for(
            (await make_runner(settings)).run(make_spec(commands=["echo done; exit 4"])), 30
        )
    finally:
        release.set()
    assert asked.is_set()  # the runner did ask Podman's wait, and did not need it
    assert (result.status, result.exit_code, result.stdout) == (FAILED, 4, b"done\n")


async def test_a_warm_job_ends_without_podman_recording_the_stop(
    make_runner: RunnerMaker,
    podman_client: PodmanClient,
    settings: SandboxSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # In a warm sandbox the runner reports the end as the process exits (SPEC §4.10):
    # with Podman's wait, exit state and inspect all held shut, the warm run still
    # ends; the cold one needs them, so only its usual path is checked.
    if make_runner.mode == "cold":
        result = await run(make_runner, settings, make_spec(commands=["echo done; exit 4"]))
        assert (result.exit_code, result.stdout) == (4, b"done\n")
        return
    runner = await make_runner(settings)
    release = threading.Event()

    def held(*args: object, **kwargs: object) -> None:
        release.wait(60)
        raise RuntimeError("held shut by the test")

    for name in ("wait_container", "ended_state", "exit_state", "container_state"):
        monkeypatch.setattr(ops, name, held)
    try:
        result = await asyncio.wait_for(
            runner.run(make_spec(commands=["echo done; echo err >&2; exit 4"])), 30
        )
    finally:
        release.set()
    assert (result.status, result.reason, result.exit_code) == (FAILED, "exit_code", 4)
    assert (result.stdout, result.stderr) == (b"done\n", b"err\n")


async def test_the_job_cannot_forge_its_end_nor_reach_the_runner(
    make_runner: RunnerMaker, podman_client: PodmanClient, settings: SandboxSettings
) -> None:
    # A frame with the runner's end written straight into the container's stdout (pid
    # 1's, which the job may open) lacks the node's nonce: ignored. The runner itself
    # (the job's parent in a warm sandbox) is not dumpable: its descriptors are closed
    # to the job. On the cold path the bytes are plain output.
    body = b'{"nonce": "guess", "exit_code": 0, "oom": false, "out_empty": true}'
    forged = struct.pack(">BxxxL", 3, len(body)) + body
    octal = "".join("\\" + format(b, "03o") for b in forged)
    script = (
        # (Where pid 1 is out of the job's reach too, as under sandbox.userns, the
        # write is refused; either way the end is the job's real one.)
        f"printf '{octal}' 2>/dev/null > /proc/1/fd/1 || true\n"
        f"printf '{octal}'\n"  # and as its own output: plain bytes
        'ls /proc/$PPID/fd >/dev/null 2>&1 && echo "parent open" || echo "parent closed"\n'
        "exit 3\n"
    )
    result = await run(make_runner, settings, make_spec(script=script))
    assert (result.status, result.exit_code) == (FAILED, 3), result.stderr
    assert result.stdout.endswith(forged + b"parent open\n") or result.stdout.endswith(
        forged + b"parent closed\n"
    )
    if make_runner.mode == "warm":
        assert b"parent closed\n" in result.stdout
