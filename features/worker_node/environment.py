"""behave hooks for features/worker_node: a REAL `cynode-node run` process on real
Podman, driven by the in-test gRPC control plane (tests/node/cp_server.py) served from
a background event loop; the @orchestrator scenario uses a real `cynode-orchestrator
serve` instead. Needs the images from `make images`.

Context for steps: plane (PlaneThread), node (cynode.testing.Node or None), orchestrator
(cynode.testing.Orchestrator or None).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("CONTAINERS_CONF", str(ROOT / "deploy" / "podman" / "containers.conf"))
IMAGE = "localhost/cynode-sandbox"


def before_all(context: Any) -> None:
    if context.config.dry_run:
        return
    found = subprocess.run(["podman", "image", "exists", IMAGE], check=False)
    if found.returncode != 0:
        raise RuntimeError(f"{IMAGE} is missing: run `make images` first")


def before_scenario(context: Any, scenario: Any) -> None:
    context.plane = None
    context.node = None
    context.orchestrator = None
    context.cleanups = []


def after_scenario(context: Any, scenario: Any) -> None:
    if context.node is not None:
        context.node.stop()
        if scenario.status == "failed":
            print(context.node.tail())
    if context.orchestrator is not None:
        if scenario.status == "failed":
            print(context.orchestrator.tail())
        context.orchestrator.stop()
    if context.plane is not None:
        context.plane.close()
    for cleanup in reversed(context.cleanups):
        cleanup()
