"""User gateway REST: task-create throughput and latency beside a GET /healthz baseline
measured in the same run, against a real `cynode-orchestrator serve` process, on
SQLite and on Postgres.

    .venv/bin/python -m bench.gateway [--requests 2000] [--concurrency 16] [--backend both]

The ratio (create rate / healthz rate) is the figure to watch: it says what the auth
check, validation and the one-transaction insert cost over the bare HTTP stack, on
this machine, with this client.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from cynode.testing import PG_DSN, Orchestrator, PgSchema


@dataclass
class Result:
    name: str
    requests: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def pct(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000


@contextmanager
def server(db_url: str, data_dir: Path, password: str) -> Iterator[str]:
    orch = Orchestrator(
        data_dir,
        password,
        # serve also runs the control plane: it needs a PSK.
        password,
        database_url=db_url,
        settings={"CYNODE_REQUIRE_INFERENCE": "false", "CYNODE_LOG_LEVEL": "warning"},
        log=data_dir / "orchestrator.log",
        ready_timeout=60.0,
        grace=30.0,
    )
    orch.start()
    try:
        yield orch.gateway_url
    finally:
        orch.stop()


async def _run(
    name: str,
    total: int,
    concurrency: int,
    call: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]],
    client: httpx.AsyncClient,
    expect: int,
) -> Result:
    latencies: list[float] = []
    remaining = iter(range(total))

    async def worker() -> None:
        for _ in remaining:
            start = time.perf_counter()
            resp = await call(client)
            latencies.append(time.perf_counter() - start)
            if resp.status_code != expect:
                raise RuntimeError(f"{name}: {resp.status_code} {resp.text[:200]}")

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Result(name, total, time.perf_counter() - start, latencies)


async def measure(url: str, password: str, total: int, concurrency: int) -> list[Result]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        login = await client.post("/v1/auth/login", json={"handle": "admin", "password": password})
        auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
        body = {"prompt": "benchmark prompt " * 8}

        async def healthz(c: httpx.AsyncClient) -> httpx.Response:
            return await c.get("/healthz")

        async def create(c: httpx.AsyncClient) -> httpx.Response:
            return await c.post("/v1/tasks", json=body, headers=auth)

        warm = max(50, total // 20)
        await _run("warm-up", warm, concurrency, healthz, client, 200)
        await _run("warm-up", warm, concurrency, create, client, 201)
        return [
            await _run("GET /healthz", total, concurrency, healthz, client, 200),
            await _run("POST /v1/tasks", total, concurrency, create, client, 201),
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args(argv)
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    rows: list[tuple[str, Result, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-gw-") as tmp:
        for backend in backends:
            password = secrets.token_urlsafe(16)
            data = Path(tmp) / backend
            schema = PgSchema.create("bench", PG_DSN) if backend == "postgres" else None
            db_url = schema.url if schema else f"sqlite:///{data / 'cynode.db'}"
            try:
                with server(db_url, data, password) as url:
                    health, create = asyncio.run(
                        measure(url, password, args.requests, args.concurrency)
                    )
            finally:
                if schema is not None:
                    schema.drop()
            rows.append((backend, health, 1.0))
            rows.append((backend, create, create.rate / health.rate))
    print(
        f"gateway REST, {args.requests} requests per row, concurrency {args.concurrency}, "
        "one server process"
    )
    print(
        f"{'backend':9} {'request':16} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'vs healthz':>11}"
    )
    for backend, res, ratio in rows:
        print(
            f"{backend:9} {res.name:16} {res.rate:8.0f} {res.pct(0.5):8.1f} {res.pct(0.99):8.1f}"
            f" {ratio:10.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
