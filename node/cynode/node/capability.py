"""The capability report, filled from the machine the node runs on."""

from __future__ import annotations

import os
import platform
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp

from cynode.controlplane.v1 import nodes_pb2

from .config import NodeConfig
from .runtime.warm_pool import WarmStatus

REPORT_VERSION = 1


@dataclass
class InferenceStatus:
    running: bool = False
    models: list[str] = field(default_factory=list)


def ram_mb(meminfo: Path = Path("/proc/meminfo")) -> int:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024))


def distro(os_release: Path = Path("/etc/os-release")) -> str:
    fields: dict[str, str] = {}
    try:
        for line in os_release.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                fields[key] = value.strip().strip('"')
    except OSError:
        return ""
    if "ID" in fields:
        return f"{fields['ID']} {fields.get('VERSION_ID', '')}".strip()
    return fields.get("PRETTY_NAME", "")


def storage_free_mb(path: Path) -> int:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free // (1024 * 1024)


def sandbox_features(root: Path = Path("/")) -> list[str]:
    """What the kernel gives the sandbox; always-on podman options are listed too."""
    features = ["network-none", "read-only-rootfs", "cap-drop-all", "no-new-privileges"]
    if (root / "proc/self/ns/net").exists():
        features.append("netns")
        features.append("pods")
    if (root / "sys/fs/cgroup/cgroup.controllers").exists():
        features.append("cgroups-v2")
    elif (root / "sys/fs/cgroup/memory").exists():
        features.append("cgroups-v1")
    return features


def gpu_present(dev: Path = Path("/dev")) -> bool:
    return (dev / "nvidia0").exists() or (dev / "kfd").exists()


def build_report(
    config: NodeConfig,
    *,
    podman_version: str,
    inference: InferenceStatus | None = None,
    warm: list[WarmStatus] | None = None,
    now: datetime | None = None,
) -> nodes_pb2.CapabilityReport:
    reported = Timestamp()
    reported.FromDatetime(now or datetime.now(UTC))
    inference = inference or InferenceStatus()
    mode = config.inference_mode
    return nodes_pb2.CapabilityReport(
        version=REPORT_VERSION,
        reported_at=reported,
        node=nodes_pb2.NodeIdentity(
            node_slug=config.node_slug, name=config.node_name, labels=list(config.labels)
        ),
        platform=nodes_pb2.Platform(
            os=platform.system().lower(),
            arch=platform.machine(),
            distro=distro(),
            kernel_version=platform.release(),
        ),
        container_runtime=nodes_pb2.ContainerRuntime(runtime="podman", version=podman_version),
        compute=nodes_pb2.Compute(
            cpu_cores=os.cpu_count() or 1,
            ram_mb=ram_mb(),
            storage_free_mb=storage_free_mb(config.state_dir),
        ),
        gpu=nodes_pb2.Gpu(present=gpu_present()),
        sandbox=nodes_pb2.SandboxCapability(
            supported=bool(podman_version),
            features=sandbox_features(),
            max_concurrency=config.max_concurrency,
            warm_sandboxes=[
                nodes_pb2.WarmSandboxClass(
                    sandbox_class=w.key, image=w.image, size=w.size, ready=w.available
                )
                for w in warm or ()
                if w.kind == "sandbox" and w.key and w.size > 0
            ],
        ),
        inference=nodes_pb2.InferenceCapability(
            supported=mode != "none",
            mode=mode,
            existing_service=mode == "existing",
            running=inference.running,
            models=inference.models,
            max_concurrency=max(1, config.inference_max_concurrency),
        ),
        worker_api=nodes_pb2.WorkerApi(base_url=config.advertised_worker_api),
    )
