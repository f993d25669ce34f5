"""The capability report and the host facts it is filled from."""

from __future__ import annotations

import os
from pathlib import Path

from cynode.node.capability import (
    InferenceStatus,
    build_report,
    distro,
    gpu_present,
    ram_mb,
    sandbox_features,
    storage_free_mb,
)
from cynode.node.config import NodeConfig
from cynode.node.runtime.warm_pool import WarmStatus


def test_capability_report_reflects_this_machine(tmp_path: Path) -> None:
    config = NodeConfig(
        node_slug="cap", labels=("x",), state_dir=tmp_path / "nope", inference_mode="existing"
    )
    report = build_report(config, podman_version="4.3.1", inference=InferenceStatus(True, ["tiny"]))
    assert report.version == 1
    assert report.compute.cpu_cores == os.cpu_count()
    assert report.compute.ram_mb > 100
    assert report.compute.storage_free_mb > 0
    assert report.container_runtime.version == "4.3.1"
    assert report.sandbox.supported and "netns" in report.sandbox.features
    assert report.inference.mode == "existing" and report.inference.existing_service
    assert list(report.inference.models) == ["tiny"]
    assert report.platform.kernel_version == os.uname().release


def test_the_report_carries_warm_sandbox_classes_with_a_size(tmp_path: Path) -> None:
    config = NodeConfig(node_slug="cap", state_dir=tmp_path)
    warm = [
        WarmStatus("sandbox", "img mem=512m", "img", 2, 1, 2, 0, 0),
        WarmStatus("sandbox", "", "", 0, 0, 0, 0, 0),  # not filled yet
        WarmStatus("pod", "pods", "", 1, 1, 1, 0, 0),  # pods are not sandboxes
    ]
    report = build_report(config, podman_version="4.3.1", warm=warm)
    [entry] = report.sandbox.warm_sandboxes
    assert (entry.sandbox_class, entry.image, entry.size, entry.ready) == (
        "img mem=512m",
        "img",
        2,
        2,
    )
    assert not build_report(config, podman_version="4.3.1").sandbox.warm_sandboxes


def test_capability_probes_on_fake_roots(tmp_path: Path) -> None:
    (tmp_path / "meminfo").write_text("MemTotal:  2048000 kB\n")
    assert ram_mb(tmp_path / "meminfo") == 2000
    assert ram_mb(tmp_path / "absent") > 0
    (tmp_path / "os-release").write_text('ID=debian\nVERSION_ID="12"\n')
    assert distro(tmp_path / "os-release") == "debian 12"
    (tmp_path / "os-release").write_text('PRETTY_NAME="Something"\n')
    assert distro(tmp_path / "os-release") == "Something"
    assert distro(tmp_path / "absent") == ""
    (tmp_path / "sys/fs/cgroup/memory").mkdir(parents=True)
    assert "cgroups-v1" in sandbox_features(tmp_path)
    (tmp_path / "sys/fs/cgroup/cgroup.controllers").write_text("")
    assert "cgroups-v2" in sandbox_features(tmp_path)
    assert not gpu_present(tmp_path)
    (tmp_path / "nvidia0").write_text("")
    assert gpu_present(tmp_path)
    assert storage_free_mb(tmp_path / "a" / "b") > 0
