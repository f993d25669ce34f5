"""The inference proxy's cost, and the inference pod's cost, measured in one run.

    .venv/bin/python -m bench.proxy [--requests 2000] [--stream-mb 256] [--runs 10]
                                    [--skip-pod | --pod-only] [--proxy-image IMAGE]
                                    [--log-steps]

1. Added latency per request: the same client asks a scripted upstream's /api/version
   directly and through the proxy (`python -m cynode.proxy`, the sidecar's entrypoint,
   TCP in, TCP out), sequentially on a kept-alive connection; p50/p99 of each and of the
   difference (target: <= 1 ms added at p50). Also through both hops of a real pod
   path (sidecar TCP -> relay UDS -> upstream).
2. Streamed throughput: a large NDJSON stream from the scripted upstream, read directly
   and through the proxy in interleaved rounds; the share is the median of each round's
   proxy/direct ratio (target: >= 90 % of direct). Both reads are the same client code
   on the same session, and the proxy passes the upstream's chunks on as they are, so
   the client's own work per byte is the same either way. Also the CPU each process
   spends per GB streamed (median over the rounds), which shows what the share hides:
   - whether the client pays for the proxy: on loopback the kernel delivers data in
     the sender's context, or in the reader's when the sender's queue waits for the
     reader's window; the proxy once left a pipe-full there and the client then spent
     up to twice its direct CPU per GB;
   - the bound the proxy's own CPU sets: the direct run keeps both endpoints busy, each
     about one core, so on a machine with two cores whatever the proxy spends comes out
     of theirs, and the share cannot pass about direct / (direct + proxy) of those
     figures however the proxy schedules its work.
   The CPU figures depend much less on how busy the machine is than the share does.
3. Inference task vs a bare container: a use_inference job with one curl to the proxy
   (pod + sidecar + relay to the real dev model) against
   `podman run --rm --network none localhost/cynode-sandbox true`; ratio of the medians
   (targets: <= 2.5 with a warm pod, <= 1.5 on a cold pod). The jobs go through what
   the node uses: `PodmanHost.runner_factory`
   (a JobRunner that reports the result before removing the pod; the node keeps the
   slot until `released()`, which is awaited between jobs, outside the timing) on a
   private Podman service. Two figures, in interleaved rounds with the raw run:
   - warm: the node's default (`inference.warm_pods: 1`): the job takes the warm pod
     the node made while idle (the bench waits for that refill between jobs, as on a
     node whose jobs do not arrive back to back), so it only creates and starts its
     sandbox in a pod whose proxy already answers;
   - cold: `inference.warm_pods: 0`: the job makes its own pod and sidecar and waits
     for the proxy to come up.
   Also: warm jobs back to back (the next job right after the previous one's removal,
   when the refill may still be in the making), and a plain job without inference.

Upstream, proxy and relay each run in their own process, as in production, so the
client's CPU time is not counted against the proxy. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
from aiohttp import web

from bench.procstat import cpu_seconds
from bench.sandbox import podman_env, raw_run
from cynode.testing import free_port, listening, wait_until

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
SANDBOX_IMAGE = "localhost/cynode-sandbox:latest"
PROXY_IMAGE = "localhost/cynode-proxy:latest"
LINE = b'{"model":"bench","response":"' + b"x" * 200 + b'","done":false}\n'
THROUGHPUT_ROUNDS = 5


# -- the scripted upstream (runs in its own process) -----------------------------------


def upstream_app(stream_bytes: int) -> web.Application:
    async def version(request: web.Request) -> web.Response:
        return web.json_response({"version": "bench"})

    async def generate(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        block = LINE * (65536 // len(LINE))
        sent = 0
        while sent < stream_bytes:
            await response.write(block)
            sent += len(block)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/api/version", version)
    app.router.add_post("/api/generate", generate)
    return app


def serve_upstream(port: int, stream_bytes: int) -> None:
    web.run_app(upstream_app(stream_bytes), host="127.0.0.1", port=port, print=None)


# -- helpers ---------------------------------------------------------------------------


def wait_port(port: int, within: float = 30) -> None:
    wait_until(lambda: listening("127.0.0.1", port, 0.5), within, f"a listener on {port}")


def wait_unix(path: str, within: float = 30) -> None:
    wait_until(Path(path).is_socket, within, f"a socket at {path}", interval=0.05)


@contextlib.contextmanager
def process(argv: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(ROOT / p) for p in ("proxy", ".")))
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- 1 and 2: latency and throughput ---------------------------------------------------


async def latencies(session: aiohttp.ClientSession, url: str, n: int) -> list[float]:
    for _ in range(50):  # warm-up: connections, caches
        async with session.get(url) as response:
            await response.read()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        async with session.get(url) as response:
            await response.read()
        times.append(time.perf_counter() - start)
    return times


@dataclasses.dataclass
class Streamed:
    mb_per_s: float
    cpu_per_gb: dict[str, float]  # process name -> CPU seconds per GB streamed


async def throughput(
    session: aiohttp.ClientSession, url: str, pids: dict[str, int] | None = None
) -> Streamed:
    """Read one stream; with ``pids``, also what each process spent on it (the client
    is this process)."""
    pids = dict(pids or {}, client=os.getpid())
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    start = time.perf_counter()
    total = 0
    async with session.post(url, data=b"{}") as response:
        async for chunk in response.content.iter_any():
            total += len(chunk)
    elapsed = time.perf_counter() - start
    cpu = {name: (cpu_seconds(pid) - before[name]) / total * 1e9 for name, pid in pids.items()}
    return Streamed(total / elapsed / 1e6, cpu)


async def measure_proxy(requests: int, stream_mb: int) -> list[tuple[str, str]]:
    up_port, proxy_port, hop_port = free_port(), free_port(), free_port()
    relay_sock = tempfile.mktemp(prefix="cynode-bench-relay-", suffix=".sock", dir="/tmp")
    stream_bytes = stream_mb * 1024 * 1024
    proxy = [PY, "-m", "cynode.proxy", "--log-level", "WARNING"]
    with (
        process(
            [PY, "-m", "bench.proxy", "--serve-upstream", str(up_port), str(stream_bytes)]
        ) as upstream,
        process(
            [
                *proxy,
                "--listen",
                f"127.0.0.1:{proxy_port}",
                "--upstream",
                f"http://127.0.0.1:{up_port}",
            ]
        ) as proxy_proc,
        process(
            [*proxy, "--listen", f"unix:{relay_sock}", "--upstream", f"http://127.0.0.1:{up_port}"]
        ) as relay,
        process(
            [*proxy, "--listen", f"127.0.0.1:{hop_port}", "--upstream", f"unix:{relay_sock}"]
        ) as sidecar,
    ):
        for port in (up_port, proxy_port, hop_port):
            wait_port(port)
        wait_unix(relay_sock)
        rows: list[tuple[str, str]] = []
        async with aiohttp.ClientSession() as session:
            direct = await latencies(session, f"http://127.0.0.1:{up_port}/api/version", requests)
            proxied = await latencies(
                session, f"http://127.0.0.1:{proxy_port}/api/version", requests
            )
            two_hops = await latencies(
                session, f"http://127.0.0.1:{hop_port}/api/version", requests
            )
            for name, values in (
                ("direct", direct),
                ("proxy", proxied),
                ("sidecar+relay", two_hops),
            ):
                p50, p99 = pct(values, 0.5) * 1e3, pct(values, 0.99) * 1e3
                rows.append(
                    (f"latency /api/version {name}", f"p50 {p50:7.3f} ms   p99 {p99:7.3f} ms")
                )
            for name, values in (("proxy", proxied), ("sidecar+relay", two_hops)):
                added50 = (pct(values, 0.5) - pct(direct, 0.5)) * 1e3
                added99 = (pct(values, 0.99) - pct(direct, 0.99)) * 1e3
                verdict = "ok" if added50 <= 1.0 else "over target"
                rows.append(
                    (
                        f"added latency, {name}",
                        f"p50 {added50:7.3f} ms   p99 {added99:7.3f} ms   "
                        f"(target p50 <= 1 ms: {verdict})",
                    )
                )
            gen = "/api/generate"
            streams = {"direct": up_port, "proxy": proxy_port, "sidecar+relay": hop_port}
            # The processes each stream passes through (besides this client).
            involved = {
                "direct": {"upstream": upstream.pid},
                "proxy": {"upstream": upstream.pid, "proxy": proxy_proc.pid},
                "sidecar+relay": {
                    "upstream": upstream.pid,
                    "relay": relay.pid,
                    "sidecar": sidecar.pid,
                },
            }
            for port in streams.values():  # warm-up: connections (the proxies' pools too)
                await throughput(session, f"http://127.0.0.1:{port}{gen}")
            # Rounds of direct, proxy, relay back to back, each compared with the direct
            # run of its own round: other work on the machine then weighs on both sides
            # of a ratio alike instead of on whichever block it happened to overlap.
            runs: dict[str, list[Streamed]] = {name: [] for name in streams}
            for _ in range(THROUGHPUT_ROUNDS):
                for name, port in streams.items():
                    url = f"http://127.0.0.1:{port}{gen}"
                    runs[name].append(await throughput(session, url, involved[name]))
        mbs = {name: [run.mb_per_s for run in done] for name, done in runs.items()}
        direct_mbs = statistics.median(mbs["direct"])
        rows.append((f"stream {stream_mb} MiB NDJSON direct", f"{direct_mbs:8.1f} MB/s"))
        for name in ("proxy", "sidecar+relay"):
            share = statistics.median(
                ours / direct * 100 for ours, direct in zip(mbs[name], mbs["direct"], strict=True)
            )
            verdict = "ok" if share >= 90 else "under target"
            rows.append(
                (
                    f"stream {stream_mb} MiB NDJSON {name}",
                    f"{statistics.median(mbs[name]):8.1f} MB/s = {share:5.1f} % of direct "
                    f"(median of {THROUGHPUT_ROUNDS} paired rounds; target >= 90 %: {verdict})",
                )
            )
        rows += cpu_rows(runs)
    return rows


def cpu_rows(runs: dict[str, list[Streamed]]) -> list[tuple[str, str]]:
    """CPU per GB of each process, per stream kind, and the bound it puts on the share
    where the endpoints already fill the machine's cores."""
    rows: list[tuple[str, str]] = []
    medians: dict[str, dict[str, float]] = {}
    for name, done in runs.items():
        medians[name] = {
            process: statistics.median(run.cpu_per_gb[process] for run in done)
            for process in done[0].cpu_per_gb
        }
        parts = "  ".join(f"{process} {cpu:5.2f}" for process, cpu in medians[name].items())
        rows.append((f"stream CPU s per GB, {name}", parts))
    direct = sum(medians["direct"].values())
    for name in ("proxy", "sidecar+relay"):
        added = sum(
            cpu for process, cpu in medians[name].items() if process not in ("upstream", "client")
        )
        rows.append(
            (
                f"stream CPU added, {name}",
                f"{added / direct * 100:5.1f} % of the direct path's; with the direct run "
                f"on all cores, share <= ~{direct / (direct + added) * 100:4.1f} %",
            )
        )
    return rows


# -- 3: the inference pod against a bare container -------------------------------------


@contextlib.asynccontextmanager
async def model_relay(directory: Path) -> AsyncIterator[str]:
    """The relay's socket, in front of the dev model (sidecars and cold jobs' proxies
    forward to it: SPEC §4.6)."""
    from cynode.node.devinference import start_dev_inference
    from cynode.node.inference.relay import InferenceRelay

    model = await start_dev_inference("127.0.0.1", 0, n_ctx=512, default_num_predict=4)
    relay = InferenceRelay(directory, model.url)
    try:
        yield str(await relay.start())
    finally:
        await relay.close()
        await model.close()


@dataclasses.dataclass
class PodFigures:
    raw: list[float] = dataclasses.field(default_factory=list)
    warm: list[float] = dataclasses.field(default_factory=list)
    cold: list[float] = dataclasses.field(default_factory=list)
    back_to_back: list[float] = dataclasses.field(default_factory=list)
    plain: list[float] = dataclasses.field(default_factory=list)
    warm_taken: int = 0


async def pod_runs(runs: int, proxy_image: str = PROXY_IMAGE) -> PodFigures:
    from podman import PodmanClient
    from ulid import ULID

    from cynode.jobs.v1 import job_pb2
    from cynode.node.config import NodeConfig
    from cynode.node.inference.proxy_host import ProxyHost
    from cynode.node.job_worker import RunnerFactory
    from cynode.node.podman_host import PodmanHost
    from cynode.node.runtime import PodmanService, SandboxSettings, remove_leftovers
    from cynode.node.runtime.labels import LABEL_NODE_ID, LABEL_ROLE
    from cynode.node.runtime.settings import InferencePodSettings

    work = Path(tempfile.mkdtemp(prefix="cynode-bench-pod-"))
    service = PodmanService(work / "podman", containers_conf=Path(podman_env()["CONTAINERS_CONF"]))
    await service.astart()
    node_id = f"bench-{str(ULID()).lower()}"
    # Two node hosts on the one Podman service: the default (one warm pod) and none.
    # No warm sandboxes: the plain row is the cold container these pods are weighed against.
    base = NodeConfig(
        node_slug="bench",
        state_dir=work,
        podman_socket=str(service.socket_path),
        sandbox_warm_containers=0,
    )
    warm_host = PodmanHost(dataclasses.replace(base, inference_warm_pods=1))
    cold_host = PodmanHost(dataclasses.replace(base, inference_warm_pods=0))
    figures = PodFigures()
    try:
        await warm_host.start()
        await cold_host.start()
        async with contextlib.AsyncExitStack() as stack:
            relay_socket = await stack.enter_async_context(model_relay(work / "relay"))
            plain = SandboxSettings(image=SANDBOX_IMAGE, node_id=node_id)
            inference_pod = InferencePodSettings(relay_socket=relay_socket, proxy_image=proxy_image)
            pod = dataclasses.replace(plain, inference=inference_pod)

            # Cold jobs' proxies run in the node's proxy host, started with inference.
            def podman() -> PodmanClient:
                assert cold_host.client is not None
                return cold_host.client

            proxy_host = ProxyHost(
                podman,
                inference_pod,
                labels={LABEL_NODE_ID: node_id, LABEL_ROLE: "proxy-host"},
                jobs=base.max_concurrency,
            )
            stack.push_async_callback(proxy_host.close)
            await proxy_host.start()
            warm_jobs = warm_host.runner_factory(lambda: pod)
            cold_jobs = cold_host.runner_factory(lambda: pod)
            plain_jobs = cold_host.runner_factory(lambda: plain)
            pool = warm_host.warm_pods
            assert pool is not None

            async def ignore(*_: object) -> None:
                return None

            async def one(factory: RunnerFactory, **fields: object) -> float:
                spec = job_pb2.JobSpec(
                    job_id=str(ULID()),
                    task_id=str(ULID()),
                    attempt=1,
                    input_mode=job_pb2.INPUT_MODE_COMMANDS,
                    **fields,  # type: ignore[arg-type]
                )
                runner = factory(ignore, ignore)
                start = time.perf_counter()
                result = await runner.run(spec)
                elapsed = time.perf_counter() - start
                # The node frees the job's slot only now; not part of the job's latency.
                await runner.released()
                if result.status != job_pb2.JOB_STATUS_COMPLETED:
                    raise RuntimeError(f"bench job failed: {result}")
                return elapsed

            curl = "curl -sf $OLLAMA_BASE_URL/api/tags >/dev/null"
            inference = {"commands": [curl], "use_inference": True}
            warm_host.keep_warm(pod)  # as the node does once it is ready
            await pool.wait_filled()
            await one(warm_jobs, **inference)  # warm-ups
            await one(cold_jobs, **inference)
            await one(plain_jobs, commands=["true"])
            raw_run()
            taken = pool.taken
            for _ in range(runs):
                figures.raw.append(raw_run())
                await pool.wait_filled()  # an idle node: its refill is done
                figures.warm.append(await one(warm_jobs, **inference))
                figures.cold.append(await one(cold_jobs, **inference))
                figures.plain.append(await one(plain_jobs, commands=["true"]))
            figures.warm_taken = pool.taken - taken
            await pool.wait_filled()
            for _ in range(runs):
                figures.back_to_back.append(await one(warm_jobs, **inference))
    finally:
        await warm_host.close()
        await cold_host.close()
        with contextlib.suppress(Exception), service.client() as client:
            await remove_leftovers(client, node_id)
        await service.astop()
    return figures


async def main_async(args: argparse.Namespace) -> None:
    rows: list[tuple[str, str]] = (
        [] if args.pod_only else await measure_proxy(args.requests, args.stream_mb)
    )
    if not args.skip_pod:
        figures = await pod_runs(args.runs, args.proxy_image)
        raw = statistics.median(figures.raw)

        def ms(values: list[float]) -> str:
            return f"median {statistics.median(values) * 1e3:8.1f} ms"

        def verdict(ratio: float, target: float) -> str:
            outcome = "ok" if ratio <= target else "over target"
            return f"{ratio:8.2f}   (target <= {target:g}: {outcome})"

        warm = statistics.median(figures.warm) / raw
        cold = statistics.median(figures.cold) / raw
        rows += [
            ("raw podman run --rm --network none ... true", ms(figures.raw)),
            ("job without inference (node runner, true)", ms(figures.plain)),
            (
                "inference job, warm pod (node default)",
                f"{ms(figures.warm)}   ({figures.warm_taken}/{len(figures.warm)} took a warm pod)",
            ),
            ("inference job, cold (inference.warm_pods: 0)", ms(figures.cold)),
            ("inference job, warm pod, jobs back to back", ms(figures.back_to_back)),
            ("ratio inference job (warm pod) / raw podman run", verdict(warm, 2.5)),
            # Issue 16's target for the cold pod (docs/fast-path.md §5 says where it goes).
            ("ratio inference job on a cold pod / raw podman run", verdict(cold, 1.5)),
        ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.proxy", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--stream-mb", type=int, default=256)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--skip-pod", action="store_true", help="only the proxy measurements")
    parser.add_argument("--pod-only", action="store_true", help="only the pod measurements")
    parser.add_argument("--proxy-image", default=PROXY_IMAGE, help="the sidecar's image")
    parser.add_argument(
        "--log-steps",
        action="store_true",
        help="print the node's step timing of each cold pod (docs/fast-path.md §5)",
    )
    parser.add_argument(
        "--serve-upstream", nargs=2, metavar=("PORT", "BYTES"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.log_steps:
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        logging.getLogger("cynode.node.runtime.pod_hook").setLevel(logging.INFO)
    if args.serve_upstream:
        serve_upstream(int(args.serve_upstream[0]), int(args.serve_upstream[1]))
        return 0
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
