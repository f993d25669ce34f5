"""behave hooks for features/multihost: test hosts in network namespaces joined by veth
pairs (tests/netns/topology.py) running the REAL orchestrator and two REAL nodes on Podman
(tests/netns/cluster.py), TLS on every link and mTLS for the nodes. Needs root, ip,
nsenter, tcpdump, podman and the images from `make images`.

The Background's steps make the hosts and start the processes on first use; they then
live for the whole feature (starting them is most of the run). after_feature removes
them whatever happened, after_all again for a feature that was aborted. Namespaces and
processes a crashed run left behind are removed first (Topology.create -> remove_stale),
never those of a run still going in parallel.

Context for steps: multihost (MultiHost: tmp, topo, cluster, captures) for the feature,
marker (a fresh string per scenario, what `$MARKER` in a step stands for).
On failure the processes' logs are kept and their tails printed.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.netns.cluster import Cluster  # noqa: E402
from tests.netns.topology import Topology  # noqa: E402

TOOLS = ("ip", "nsenter", "tcpdump", "podman")
LOG_TAIL = 3000


@dataclass
class MultiHost:
    tmp: Path
    topo: Topology | None = None
    cluster: Cluster | None = None
    # tcpdumps a scenario started; closed at the latest when the scenario ends.
    captures: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    failed: bool = False

    def close(self) -> None:
        try:
            self.captures.close()
            if self.cluster is not None:
                self.cluster.stop_all()
        finally:
            if self.topo is not None:
                self.topo.destroy()
            self.cluster = self.topo = None


# Open ones, for after_all: behave drops the feature's context layer before it.
_OPEN: list[MultiHost] = []


def _say(msg: str) -> None:
    print(f"multihost: {msg}", file=sys.stderr, flush=True)


def before_all(context: Any) -> None:
    if context.config.dry_run:
        return
    # Never skipped: a host that cannot run the suite fails it, saying why.
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(f"features/multihost needs {missing} (tools/system-deps.sh)")


def before_feature(context: Any, feature: Any) -> None:
    context.multihost = MultiHost(Path(tempfile.mkdtemp(prefix="cynode-multihost-")))
    _OPEN.append(context.multihost)


def before_scenario(context: Any, scenario: Any) -> None:
    context.marker = f"multihost-marker-{secrets.token_hex(8)}"


def after_scenario(context: Any, scenario: Any) -> None:
    context.multihost.captures.close()
    if scenario.status == "failed":
        context.multihost.failed = True


def _finish(multihost: MultiHost) -> None:
    logs = sorted(multihost.tmp.glob("*.log"))
    try:
        multihost.close()
    finally:
        _OPEN.remove(multihost)
        if multihost.failed:
            for log in logs:
                _say(f"--- tail of {log.name}\n{log.read_text(errors='replace')[-LOG_TAIL:]}")
            _say(f"logs kept in {multihost.tmp}")
        else:
            shutil.rmtree(multihost.tmp, ignore_errors=True)


def after_feature(context: Any, feature: Any) -> None:
    multihost: MultiHost = context.multihost
    if feature.status == "failed":
        multihost.failed = True
    _finish(multihost)


def after_all(context: Any) -> None:
    for multihost in list(_OPEN):
        multihost.failed = True
        _finish(multihost)
