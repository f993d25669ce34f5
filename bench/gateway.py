"""User gateway REST against an outside floor measured in the same run: a bare
uvicorn + Starlette app (the same uvicorn, started the way `uvicorn.run` starts it)
and a real `cynode-orchestrator serve` process, on SQLite and on Postgres, with one
client (httpx) for both.

    .venv/bin/python -m bench.gateway [--requests 2000] [--concurrency 16] [--backend both]

Ratios, each against the floor (issue 16's targets in brackets):
  - GET /healthz p50, one request at a time / the floor's GET /healthz p50   [<= 2]
  - GET /v1/users/me (an authenticated read) p50 / the floor's p50           [<= 10]
  - POST /v1/tasks rate at --concurrency / the floor's GET /healthz rate     [>= 0.25]
The gateway's own /healthz is not a floor: it pays whatever the gateway's HTTP stack
pays (the 40 ms Nagle stall hid behind it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from cynode.testing import PG_DSN, Orchestrator, PgSchema, free_port, http_ok, launch, wait_until


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


FLOOR_APP = """
import sys
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

async def healthz(request):
    return JSONResponse({"status": "ok"})

app = Starlette(routes=[Route("/healthz", healthz)])
# uvicorn's defaults: loop and HTTP parser "auto" (uvloop and httptools when installed).
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


@contextmanager
def floor_server(log: Path) -> Iterator[str]:
    """The bare uvicorn + Starlette app, in a process of its own like the gateway."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = launch("floor", [sys.executable, "-c", FLOOR_APP, str(port)], dict(os.environ), log)
    try:
        wait_until(lambda: http_ok(f"{url}/healthz"), 60, "the floor app", procs=[proc])
        yield url
    finally:
        proc.stop()


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


def _client(url: str, concurrency: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(base_url=url, limits=limits, timeout=60)


async def _healthz(c: httpx.AsyncClient) -> httpx.Response:
    return await c.get("/healthz")


ROUNDS = 5


def _merged(parts: list[Result]) -> Result:
    return Result(
        parts[0].name,
        sum(r.requests for r in parts),
        sum(r.seconds for r in parts),
        [x for r in parts for x in r.latencies],
    )


async def measure(
    floor_url: str, url: str, password: str, total: int, concurrency: int
) -> dict[str, Result]:
    """Floor and gateway in alternating rounds, so both see the same load on this shared
    machine: latency one request at a time (what one CLI command sees), throughput at
    `concurrency`. Keys: floor-1, floor-N, healthz-1, me-1, healthz-N, create-N."""
    async with _client(url, concurrency) as client:
        login = await client.post("/v1/auth/login", json={"handle": "admin", "password": password})
    auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
    body = {"prompt": "benchmark prompt " * 8}

    async def me(c: httpx.AsyncClient) -> httpx.Response:
        return await c.get("/v1/users/me", headers=auth)

    async def create(c: httpx.AsyncClient) -> httpx.Response:
        return await c.post("/v1/tasks", json=body, headers=auth)

    n, c = max(1, total // ROUNDS), concurrency
    plan = [
        ("floor-1", "GET /healthz", 1, _healthz, floor_url, 200),
        ("healthz-1", "GET /healthz", 1, _healthz, url, 200),
        ("me-1", "GET /v1/users/me", 1, me, url, 200),
        ("floor-N", "GET /healthz", c, _healthz, floor_url, 200),
        ("healthz-N", "GET /healthz", c, _healthz, url, 200),
        ("create-N", "POST /v1/tasks", c, create, url, 201),
    ]
    parts: dict[str, list[Result]] = {key: [] for key, *_ in plan}
    for round_ in range(ROUNDS):
        for key, name, conc, call, base, expect in plan:
            # A client per step: an idle keep-alive connection would meet the server's
            # keep-alive timeout while the other server's steps run.
            async with _client(base, conc) as http:
                warm = max(50, total // 20) if round_ == 0 else 4 * conc
                await _run("warm-up", warm, conc, call, http, expect)
                parts[key].append(await _run(name, n, conc, call, http, expect))
    return {key: _merged(results) for key, results in parts.items()}


@dataclass
class Row:
    where: str
    result: Result
    concurrency: int


def _print(rows: list[Row], ratios: list[tuple[str, float, str]], args: argparse.Namespace) -> None:
    print(
        f"gateway REST beside a bare uvicorn + Starlette floor, {args.requests} requests per "
        f"row in {ROUNDS} alternating rounds, httpx, one server process each"
    )
    print(f"{'server':9} {'request':18} {'conc':>4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for row in rows:
        res = row.result
        name = res.name.removeprefix("floor ")
        print(
            f"{row.where:9} {name:18} {row.concurrency:4d} {res.rate:8.0f} {res.pct(0.5):8.2f}"
            f" {res.pct(0.99):8.2f}"
        )
    print()
    for what, value, target in ratios:
        print(f"  {what:62}  {value:8.2f}   (target {target})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args(argv)
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    rows: list[Row] = []
    ratios: list[tuple[str, float, str]] = []
    c = args.concurrency
    with (
        tempfile.TemporaryDirectory(prefix="bench-gw-") as tmp,
        floor_server(Path(tmp) / "floor.log") as floor_url,
    ):
        for backend in backends:
            password = secrets.token_urlsafe(16)
            data = Path(tmp) / backend
            schema = PgSchema.create("bench", PG_DSN) if backend == "postgres" else None
            db_url = schema.url if schema else f"sqlite:///{data / 'cynode.db'}"
            try:
                with server(db_url, data, password) as url:
                    got = asyncio.run(measure(floor_url, url, password, args.requests, c))
            finally:
                if schema is not None:
                    schema.drop()
            rows += [
                Row("floor", got["floor-1"], 1),
                Row("floor", got["floor-N"], c),
                Row(backend, got["healthz-1"], 1),
                Row(backend, got["me-1"], 1),
                Row(backend, got["healthz-N"], c),
                Row(backend, got["create-N"], c),
            ]
            p50 = got["floor-1"].pct(0.5)
            ratios += [
                (
                    f"{backend} GET /healthz p50 / floor p50 ratio",
                    got["healthz-1"].pct(0.5) / p50,
                    "<= 2",
                ),
                (
                    f"{backend} GET /v1/users/me p50 / floor p50 ratio",
                    got["me-1"].pct(0.5) / p50,
                    "<= 10",
                ),
                (
                    f"{backend} POST /v1/tasks rate c{c} / floor /healthz rate ratio",
                    got["create-N"].rate / got["floor-N"].rate,
                    ">= 0.25",
                ),
            ]
    _print(rows, ratios, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
