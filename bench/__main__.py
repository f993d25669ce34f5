"""Every benchmark under bench/, then one table of the ratios they report.

    .venv/bin/python -m bench [--full] [--only gateway dispatch ...]

Each benchmark is its own program (`python -m bench.<name>`, with its own main and
yardstick measured in the same run); this runner starts them one after another, shows
their output as it comes, and gathers the ratio lines into one table at the end. By
default each runs in a quick mode (smaller counts) so the whole table takes a few
minutes; `--full` uses each benchmark's own defaults.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

Row = tuple[str, str]  # (what, ratio as printed)


def _dispatch(out: str) -> list[Row]:
    pattern = re.compile(r"^((?:sqlite|postgres)(?:/\d+u)?)\s+([\d,]+)\s+([\d.]+)\s", re.M)
    return [
        (f"{backend} jobs/s / gRPC echo rate", ratio) for backend, _, ratio in pattern.findall(out)
    ]


def _ratio_lines(out: str) -> list[Row]:
    """Lines naming a ratio followed by its number (`... ratio ... 1.23 ...`)."""
    rows = []
    for line in out.splitlines():
        match = re.match(r"^\s*(.*ratio.*?)\s{2,}([\d.]+)", line, re.I)
        if match:
            rows.append((match.group(1).strip(), match.group(2)))
    return rows


def _proxy(out: str) -> list[Row]:
    rows = []
    for line in out.splitlines():
        share = re.match(r"^\s*(stream .*?)\s{2,}[\d.]+ MB/s =\s+([\d.]+) % of direct", line)
        added = re.match(r"^\s*(added latency, \S+)\s+p50\s+([\d.]+) ms", line)
        cpu = re.match(r"^\s*stream CPU added, (\S+)\s+([\d.]+) % of the direct", line)
        if share:
            rows.append((f"{share.group(1)} / direct (%)", share.group(2)))
        elif added:
            rows.append((f"{added.group(1)}, p50 ms over direct", added.group(2)))
        elif cpu:
            rows.append((f"stream CPU per GB, {cpu.group(1)} / direct path's (%)", cpu.group(2)))
    return rows + _ratio_lines(out)


def _chat(out: str) -> list[Row]:
    rows = []
    for line in out.splitlines():
        added = re.match(r"^\s*(added time to first token, p50 ms)\s+(-?[\d.]+)", line)
        if added:
            rows.append((added.group(1), added.group(2)))
    return rows + _ratio_lines(out)


@dataclass
class Bench:
    name: str
    quick: list[str]
    parse: Callable[[str], list[Row]]
    full: list[str] = field(default_factory=list)


BENCHES = [
    Bench("gateway", ["--requests", "300"], _ratio_lines),
    Bench("dispatch", ["--nodes", "20", "--jobs", "1000", "--idle", "0"], _dispatch),
    Bench("sandbox", ["--runs", "50"], _ratio_lines),
    Bench("proxy", ["--requests", "300", "--stream-mb", "16", "--runs", "3"], _proxy),
    Bench("artifacts", ["--mb", "128"], _ratio_lines),
    Bench("chat", ["--requests", "10", "--tokens", "32", "--rounds", "1"], _chat),
]


@dataclass
class Outcome:
    bench: str
    code: int
    seconds: float
    rows: list[Row]


def run(bench: Bench, full: bool) -> Outcome:
    argv = [sys.executable, "-m", f"bench.{bench.name}", *(bench.full if full else bench.quick)]
    print(f"\n== bench.{bench.name}: {' '.join(argv[3:]) or '(defaults)'}", flush=True)
    start = time.monotonic()
    lines: list[str] = []
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(f"  {line}", end="", flush=True)
            lines.append(line)
        code = proc.wait()
    return Outcome(bench.name, code, time.monotonic() - start, bench.parse("".join(lines)))


def table(outcomes: list[Outcome]) -> str:
    rows = [("bench", "ratio", "value", "run")]
    for o in outcomes:
        status = f"{o.seconds:.0f}s" + ("" if o.code == 0 else f", exit {o.code}")
        if not o.rows:
            rows.append((o.bench, "(no ratio found: see its output above)", "-", status))
        for what, value in o.rows:
            rows.append((o.bench, what, value, status))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(
        f"{r[0]:{widths[0]}}  {r[1]:{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}" for r in rows
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="each benchmark's own defaults")
    parser.add_argument("--only", nargs="*", choices=[b.name for b in BENCHES])
    args = parser.parse_args(argv)
    chosen = [b for b in BENCHES if not args.only or b.name in args.only]
    outcomes = [run(bench, args.full) for bench in chosen]
    print(f"\n== ratios ({'full' if args.full else 'quick'} mode)")
    print(table(outcomes))
    return 0 if all(o.code == 0 for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
