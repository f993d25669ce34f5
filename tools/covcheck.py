"""Fails when any package's line coverage is under the minimum.

A package is a directory of our own source holding .py files; generated code is not
measured. Reads the combined coverage data that pytest-cov left in .coverage.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import coverage


def package_of(path: Path, root: Path) -> str:
    rel = path.resolve().relative_to(root)
    return "/".join(rel.parts[:-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--min", type=float, default=90.0)
    args = parser.parse_args()
    root = Path.cwd().resolve()
    cov = coverage.Coverage()
    cov.load()
    data = cov.get_data()
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for filename in data.measured_files():
        path = Path(filename)
        if not path.resolve().is_relative_to(root) or "/gen/" in filename:
            continue
        _, statements, _, missing, _ = cov.analysis2(filename)
        pkg = package_of(path, root)
        totals[pkg][0] += len(statements)
        totals[pkg][1] += len(statements) - len(missing)
    failed = False
    print(f"{'package':60} {'lines':>6} {'cover':>7}")
    for pkg, (stmts, hit) in sorted(totals.items()):
        pct = 100.0 * hit / stmts if stmts else 100.0
        mark = "" if pct >= args.min else f"  < {args.min:.0f}%"
        failed |= pct < args.min
        print(f"{pkg:60} {stmts:6d} {pct:6.1f}%{mark}")
    if not totals:
        print("covcheck: no coverage data", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
