"""Dispatch throughput and latency with simulated nodes, beside the raw gRPC bidi echo
rate on the same machine, and how many idle nodes one orchestrator process holds.

    .venv/bin/python -m bench.dispatch [--nodes 100] [--jobs 10000] [--idle 10000] [--users 100]

The orchestrator (gRPC server, scheduler, ingest, database client) runs in this process;
the simulated nodes, busy or idle, run in a child process, as nodes are other machines in
production, so what limits the figures is the orchestrator's own cost per job. The echo
yardstick has the same shape: the echo server here, its client streams in a child. Each
dispatched job costs the orchestrator three messages in (Ready, JobStarted, JobResult)
and two out (JobAssignment, ResultAck) plus its share of the database writes, so jobs/s ÷
echo round trips/s well under 1 is expected; `cpu ms/job` is this process's CPU time
(all threads) during the burst divided by the jobs, the figure least disturbed by other
load on the machine; `nodes` is the same for the simulated nodes' process. The nodes, the
orchestrator and (for the postgres row) the database server share the machine's cores.
Each backend runs twice: all jobs from one user, then (row `<backend>/<N>u`) the same
jobs spread over `--users` users, which the scheduler takes round-robin (fair share,
SPEC §3.9).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from ulid import ULID

from bench.procstat import cpu_seconds
from cynode.orchestrator.simnode import SimNode
from cynode.orchestrator.simnode.harness import (
    ControlPlaneServer,
    enqueue_jobs,
    make_user,
    settings_for_tests,
)
from cynode.orchestrator.simnode.node import CHANNEL_OPTIONS
from cynode.orchestrator.store import make_engine, upgrade
from cynode.orchestrator.store.tables import JOBS

PG_DSN = os.environ.get("CYNODE_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
PSK = "test-psk-0123456789"


# -- raw echo -------------------------------------------------------------------------


async def _echo(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for msg in requests:
        yield msg


async def echo_rate(streams: int, per_stream: int) -> float:
    """Round trips per second over `streams` concurrent bidi streams, pipelined: the
    server here, the client in a child process (like the nodes in dispatch_run)."""
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.stream_stream_rpc_method_handler(_echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.dispatch",
        "--child",
        "echo",
        f"127.0.0.1:{port}",
        f"{streams}x{per_stream}",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await child.communicate()
    await server.stop(None)
    line = out.decode().strip()
    if child.returncode != 0 or not line.startswith("echo "):
        raise RuntimeError(f"echo client failed: {line!r}")
    return float(line.split()[1])


async def _echo_client(target: str, streams: int, per_stream: int) -> float:
    channel = grpc.aio.insecure_channel(target)
    method = channel.stream_stream("/bench.Echo/Echo", None, None)
    payload = b"x" * 64

    async def one() -> None:
        window = asyncio.Semaphore(8)  # like credits: a few messages in flight

        async def sender() -> AsyncIterator[bytes]:
            for _ in range(per_stream):
                await window.acquire()
                yield payload

        call = method(sender())
        async for _ in call:
            window.release()

    await channel.channel_ready()
    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(streams)))
    elapsed = time.perf_counter() - start
    await channel.close(None)
    return streams * per_stream / elapsed


# -- dispatch -------------------------------------------------------------------------


async def _fresh_engine(backend: str, tmp: Path) -> tuple[AsyncEngine, str | None]:
    if backend == "sqlite":
        engine = make_engine(f"sqlite:///{tmp / f'bench-{ULID()}.db'}")
        schema = None
    else:
        schema = f"bench_{str(ULID()).lower()}"
        conn = await asyncpg.connect(PG_DSN)
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.close()
        engine = make_engine(f"{PG_DSN}?search_path={schema}")
    await upgrade(engine)
    return engine, schema


async def _drop(engine: AsyncEngine, schema: str | None) -> None:
    await engine.dispose()
    if schema:
        conn = await asyncpg.connect(PG_DSN)
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()


async def _latencies(engine: AsyncEngine, job_ids: list[str]) -> list[float]:
    """created → result stored, per job (updated_at is stamped when the result lands)."""
    out: list[float] = []
    async with engine.connect() as conn:
        for i in range(0, len(job_ids), 500):
            rows = await conn.execute(
                sa.select(JOBS.c.created_at, JOBS.c.updated_at).where(
                    JOBS.c.id.in_(job_ids[i : i + 500]), JOBS.c.status == "completed"
                )
            )
            out += [(r.updated_at - r.created_at).total_seconds() for r in rows]
    return out


async def _completed(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        n = (
            await conn.execute(
                sa.select(sa.func.count()).select_from(JOBS).where(JOBS.c.status == "completed")
            )
        ).scalar_one()
    return int(n)


async def _wait_completed(engine: AsyncEngine, n: int) -> None:
    while await _completed(engine) < n:  # noqa: ASYNC110  (the rows are in the DB)
        await asyncio.sleep(0.02)


async def _spawn_nodes(target: str, count: int, mode: str) -> asyncio.subprocess.Process:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.dispatch",
        "--child",
        mode,
        target,
        str(count),
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    line = (await child.stdout.readline()).decode()
    if not line.startswith("connected"):
        raise RuntimeError(f"simulated nodes failed to start: {line!r}")
    return child


async def _enqueue(
    engine: AsyncEngine, users: list[str], jobs: int, srv: ControlPlaneServer
) -> list[str]:
    """`jobs` queued in one transaction, dealt out over `users` in turn."""
    return [j for _, j in await enqueue_jobs(engine, users, jobs, bus=srv.bus)]


async def dispatch_run(
    backend: str, nodes: int, jobs: int, tmp: Path, users: int = 1
) -> dict[str, float]:
    """The orchestrator here; the nodes in a child process (the second core)."""
    engine, schema = await _fresh_engine(backend, tmp)
    settings = settings_for_tests(
        lease_seconds=60, heartbeat_seconds=10, sweep_seconds=5.0, claim_batch=1024
    )
    srv = await ControlPlaneServer(engine, settings).start()
    child = await _spawn_nodes(srv.target, nodes, "busy")
    owners = [await make_user(engine) for _ in range(users)]
    # Throughput: a burst of `jobs`.
    start, cpu0, nodes_cpu0 = time.perf_counter(), time.process_time(), cpu_seconds(child.pid)
    await _enqueue(engine, owners, jobs, srv)
    enqueued = time.perf_counter() - start
    await asyncio.wait_for(_wait_completed(engine, jobs), 600)
    burst = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    nodes_cpu = cpu_seconds(child.pid) - nodes_cpu0
    # Latency: an open-loop load at half the burst rate, for about three seconds.
    rate = max(50.0, 0.5 * jobs / burst)
    batches = 60
    per_batch = max(1, int(rate * 3 / batches))
    paced: list[str] = []
    for _ in range(batches):
        paced += await _enqueue(engine, owners[: min(users, per_batch)], per_batch, srv)
        await asyncio.sleep(3 / batches)
    await asyncio.wait_for(_wait_completed(engine, jobs + len(paced)), 600)
    lat = sorted(await _latencies(engine, paced))
    child.kill()
    await child.wait()
    await srv.stop()
    await _drop(engine, schema)
    return {
        "jobs_per_s": jobs / burst,
        "cpu_ms_per_job": 1000 * cpu / jobs,
        "nodes_cpu_ms_per_job": 1000 * nodes_cpu / jobs,
        "enqueue_s": enqueued,
        "paced_rate": per_batch * batches / 3,
        "p50_ms": 1000 * statistics.median(lat),
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
    }


# -- idle nodes -----------------------------------------------------------------------


async def _child(mode: str, target: str, count: str) -> None:
    """In the child process: `busy` nodes (4 slots, a channel each), `idle` ones
    (sharing 100 channels: 10 000 sockets would exceed the child's file limit), or the
    echo client (`count` is STREAMSxMESSAGES)."""
    if mode == "echo":
        streams, per_stream = (int(n) for n in count.split("x"))
        print(f"echo {await _echo_client(target, streams, per_stream)}", flush=True)
        return
    if mode == "busy":
        sims = [
            SimNode(target, PSK, f"bench-{i}", slots=4, stream_output=False)
            for i in range(int(count))
        ]
    else:
        chans = [grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) for _ in range(100)]
        sims = [
            SimNode(target, PSK, f"idle-{i}", slots=1, channel=chans[i % 100])
            for i in range(int(count))
        ]
    gate = asyncio.Semaphore(100)

    async def up(s: SimNode) -> None:
        async with gate:
            await s.start()

    await asyncio.gather(*(up(s) for s in sims))
    print(f"connected {sum(s.connected.is_set() for s in sims)}", flush=True)
    await asyncio.Event().wait()


async def idle_run(count: int, tmp: Path, window: float) -> dict[str, float]:
    engine, schema = await _fresh_engine("postgres", tmp)
    settings = settings_for_tests(lease_seconds=30, heartbeat_seconds=10, sweep_seconds=5.0)
    srv = await ControlPlaneServer(engine, settings).start()
    start = time.perf_counter()
    child = await _spawn_nodes(srv.target, count, "idle")
    setup = time.perf_counter() - start
    connected = len(srv.cp.registry)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(window)
    cpu = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    held = len(srv.cp.registry)
    child.kill()
    await child.wait()
    await srv.stop()
    await _drop(engine, schema)
    return {"connected": connected, "held": held, "cpu_share": cpu, "setup_s": setup}


# -- main -----------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        echo = await echo_rate(args.nodes, 2000)
        rows = []
        for b in args.backends:
            rows.append((b, await dispatch_run(b, args.nodes, args.jobs, tmp)))
            if args.users > 1:
                many = await dispatch_run(b, args.nodes, args.jobs, tmp, args.users)
                rows.append((f"{b}/{args.users}u", many))
        print(f"\nraw gRPC bidi echo, {args.nodes} streams: {echo:,.0f} round trips/s\n")
        print(
            f"{'backend':12} {'jobs/s':>9} {'÷ echo':>8} {'cpu ms/job':>11} {'nodes':>7} "
            f"{'paced/s':>8} {'p50 ms':>8} {'p99 ms':>8}"
        )
        for backend, r in rows:
            print(
                f"{backend:12} {r['jobs_per_s']:9,.0f} {r['jobs_per_s'] / echo:8.3f} "
                f"{r['cpu_ms_per_job']:11.3f} {r['nodes_cpu_ms_per_job']:7.3f} "
                f"{r['paced_rate']:8,.0f} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f}"
            )
        if args.idle:
            idle = await idle_run(args.idle, tmp, args.window)
            print(
                f"\nidle nodes: asked {args.idle}, connected {idle['connected']:.0f}, "
                f"held by the orchestrator {idle['held']:.0f}; orchestrator CPU "
                f"{100 * idle['cpu_share']:.1f}% of one core with heartbeats every 10 s "
                f"(setup {idle['setup_s']:.0f} s)"
            )


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=10000)
    parser.add_argument("--idle", type=int, default=10000)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--backends", nargs="*", default=["sqlite", "postgres"])
    parser.add_argument(
        "--users", type=int, default=100, help="users of the fair-share rows (1: none)"
    )
    parser.add_argument("--child", nargs=3, metavar=("MODE", "TARGET", "COUNT"))
    args = parser.parse_args()
    if args.child:
        asyncio.run(_child(args.child[0], args.child[1], args.child[2]))
    else:
        asyncio.run(main(args))


if __name__ == "__main__":
    cli()
