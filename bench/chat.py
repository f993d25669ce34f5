"""The OpenAI door's cost: time to first token and streamed tokens/s through the
gateway against the same requests made straight at the node's model server, one run.

    .venv/bin/python -m bench.chat [--requests 100] [--tokens 64] [--rounds 7]

A whole local stack (cynode.testing.Stack on free ports: the development model, the
orchestrator, a real node with its inference link and relay). The outside floor is the
model server itself, reached directly: its OpenAI-compatible `/v1/chat/completions`
(SSE), read by the same client code as the gateway's door. Requests alternate between
the two paths so both see the same machine load.

1. Time to first token: `--requests` sequential streams each way (one short prompt,
   `max_tokens` 8); p50 of each and the added p50 (target: <= 3 ms), with the CPU the
   orchestrator's and the node's processes spent per gateway request of that loop.
2. Streamed tokens/s at 1 and at 8 concurrent streams (`--tokens` each, fixed seed):
   pieces received per second of wall time, in `--rounds` interleaved rounds; the share
   is the median of the rounds' gateway/direct ratios (target: >= 95 % of direct).
3. CPU per streamed token of the gateway's hops (the orchestrator's process and the
   node's, relay included) beside the model server's, from /proc, in the same rounds:
   on a small machine what the hops take is taken from the model's cores, so this share
   bounds the tokens/s share under load, whatever the load average.

The defaults are sized so that one run decides the targets: with 30 requests and 3
rounds (a 1-stream round is one answer of about half a second), runs of the same code
scattered across the targets (docs/openai-door.md, "How many requests one run needs").

The development model answers one request at a time, and so does the node (its
`inference.max_concurrency` is 1): at 8 streams both paths queue, the model at its own
door, the gateway in its fair queue. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench.procstat import cpu_seconds
from cynode.testing import Stack, StackSettings, wait_until

MODEL = "smollm2:135m"
PROMPT = [{"role": "user", "content": "Tell me about the sea and the ships on it."}]


async def stream_once(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], tokens: int
) -> tuple[float, int, float]:
    """(seconds to the first piece, pieces, seconds in all) of one streamed answer."""
    body = {
        "model": MODEL,
        "messages": PROMPT,
        "max_tokens": tokens,
        "temperature": 0,
        "seed": 1,
        "stream": True,
    }
    started = time.perf_counter()
    first = 0.0
    pieces = 0
    async with http.stream("POST", url, json=body, headers=headers) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    pieces += 1
                    if not first:
                        first = time.perf_counter() - started
    return first, pieces, time.perf_counter() - started


class CpuMeter:
    """CPU seconds spent by the stack's processes over the rounds of one path."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.spent = dict.fromkeys(pids, 0.0)
        self.tokens = 0

    async def run(
        self,
        http: httpx.AsyncClient,
        url: str,
        headers: dict[str, str],
        streams: int,
        tokens: int,
    ) -> float:
        before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        started = time.perf_counter()
        done = await asyncio.gather(
            *(stream_once(http, url, headers, tokens) for _ in range(streams))
        )
        wall = time.perf_counter() - started
        for name, pid in self.pids.items():
            self.spent[name] += cpu_seconds(pid) - before[name]
        pieces = sum(p for _, p, _ in done)
        self.tokens += pieces
        return pieces / wall

    def per_token_ms(self, name: str) -> float:
        return self.spent.get(name, 0.0) * 1000 / max(self.tokens, 1)


async def measure(stack: Stack, token: str, args: argparse.Namespace) -> list[str]:
    pids = {name: proc.pid for name, proc in stack.procs.items()}
    direct = f"{stack.model_url}/v1/chat/completions"
    door = f"{stack.gateway_url}/v1/chat/completions"
    auth = {"authorization": f"Bearer {token}"}
    lines: list[str] = []
    async with httpx.AsyncClient(timeout=600) as http:
        # Warm both paths (model caches, connections).
        for url, headers in ((direct, {}), (door, auth)):
            await stream_once(http, url, headers, 4)
        ttft: dict[str, list[float]] = {"direct": [], "gateway": []}
        hop_procs = ("orchestrator", "node")
        before = {name: cpu_seconds(pids[name]) for name in hop_procs}
        for _ in range(args.requests):
            ttft["direct"].append((await stream_once(http, direct, {}, 8))[0])
            ttft["gateway"].append((await stream_once(http, door, auth, 8))[0])
        spent = {name: cpu_seconds(pids[name]) - before[name] for name in hop_procs}
        d50 = statistics.median(ttft["direct"]) * 1000
        g50 = statistics.median(ttft["gateway"]) * 1000
        lines.append(f"  time to first token, direct   p50 {d50:8.2f} ms")
        lines.append(f"  time to first token, gateway  p50 {g50:8.2f} ms")
        lines.append(f"  added time to first token, p50 ms  {g50 - d50:8.2f}   (target <= 3)")
        # Steadier than the wall clock on a loaded machine: what the hops' processes
        # spent per gateway request of that loop (8 tokens each; the direct requests
        # between them cost these processes nothing but their idle timers).
        lines.append(
            "  CPU per request (8 tokens): "
            + ", ".join(f"{n} {spent[n] * 1000 / args.requests:.2f} ms" for n in hop_procs)
        )
        for streams in (1, 8):
            ratios = []
            cpu = {"direct": CpuMeter(pids), "gateway": CpuMeter(pids)}
            for _ in range(args.rounds):
                d = await cpu["direct"].run(http, direct, {}, streams, args.tokens)
                g = await cpu["gateway"].run(http, door, auth, streams, args.tokens)
                ratios.append(g / d)
                lines.append(
                    f"  {streams} stream(s): direct {d:7.1f} tokens/s, gateway {g:7.1f} tokens/s"
                )
            lines.append(
                f"  tokens/s ratio gateway / direct, {streams} stream(s)  "
                f"{statistics.median(ratios):8.3f}   (target >= 0.95)"
            )
            gw = cpu["gateway"]
            hops = gw.per_token_ms("orchestrator") + gw.per_token_ms("node")
            lines.append(
                f"  CPU per token, {streams} stream(s): model {gw.per_token_ms('model'):.2f} ms, "
                f"orchestrator {gw.per_token_ms('orchestrator'):.2f} ms, "
                f"node {gw.per_token_ms('node'):.2f} ms: hops = "
                f"{100 * hops / max(gw.per_token_ms('model'), 1e-9):.1f} % of the model's"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-chat-") as tmp:
        stack = Stack(StackSettings.free(Path(tmp), node_slug="bench-chat"))
        stack.start()
        try:
            client = httpx.Client(base_url=stack.gateway_url, timeout=30)
            login = client.post(
                "/v1/auth/login",
                json={"handle": "admin", "password": stack.creds.admin_password},
            )
            login.raise_for_status()
            token = login.json()["access_token"]
            headers = {"authorization": f"Bearer {token}"}
            wait_until(
                lambda: bool(client.get("/v1/models", headers=headers).json().get("data")),
                60,
                "the node's inference link",
            )
            lines = asyncio.run(measure(stack, token, args))
        finally:
            stack.stop()
    print("bench.chat: the OpenAI door vs the model server reached directly")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
