"""The user-namespace settings without Podman (the real thing: test_userns.py): the
`containers` range check, the specgen fields, the pod and shared-volume arguments,
the doctor's check, config validation, and releasing only what is mounted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cynode.node.config import ConfigError, NodeConfig, validate
from cynode.node.doctor import check_userns
from cynode.node.runtime import userns
from cynode.node.runtime.proxy_sidecar import pod_create_kwargs, shared_volume_options
from cynode.node.runtime.sandbox import build_create_kwargs
from cynode.node.runtime.settings import SandboxSettings
from tests.node.runtime.conftest import make_spec


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_range_of_one_sandbox_at_least_is_needed_in_both_files(tmp_path: Path) -> None:
    good = write(tmp_path / "good", "alice:100000:65536\ncontainers:2147483647:2147483648\n")
    split = write(tmp_path / "split", "containers:300000:32768\ncontainers:400000:32768\n")
    small = write(tmp_path / "small", "containers:300000:1024\n# containers:1:99999999\n")
    assert userns.subid_count(good) == 2147483648
    assert userns.subid_count(split) == 65536
    assert userns.missing_ranges((good, split)) == []
    assert userns.missing_ranges((good, small, tmp_path / "absent")) == [
        str(small),
        str(tmp_path / "absent"),
    ]


def test_auto_asks_podman_for_an_automatic_mapping_and_host_for_none() -> None:
    spec = userns.userns_spec("auto")
    assert spec["userns"] == {"nsmode": "auto"}
    assert spec["idmappings"]["AutoUserNsOpts"] == {"Size": userns.RANGE_SIZE}
    assert userns.userns_spec("host") == {}


def test_containers_pods_and_the_shared_volume_follow_the_setting() -> None:
    auto, host = SandboxSettings(), SandboxSettings(userns="host")
    spec = make_spec(commands=["true"])

    def kwargs(settings: SandboxSettings, pod: str | None = None) -> dict[str, Any]:
        return build_create_kwargs(
            spec, settings, command=["true"], name="n", volume_name="v", pod=pod
        )

    cold = kwargs(auto)
    assert cold["userns_mode"] == {"nsmode": "auto"} and cold["idmappings"]["AutoUserNs"]
    plain = kwargs(host)
    assert "userns_mode" not in plain and "idmappings" not in plain
    # A pod member inherits the pod's namespace; Podman refuses one of its own.
    member = kwargs(auto, pod="p")
    assert "userns_mode" not in member and "idmappings" not in member
    assert pod_create_kwargs({}, "auto")["userns"] == {"nsmode": "auto"}
    assert "userns" not in pod_create_kwargs({}, "host")
    assert shared_volume_options("auto") == {}
    assert shared_volume_options("host") == {"o": "uid=10000,gid=10000"}


def test_release_unmounts_only_mount_points(tmp_path: Path) -> None:
    info = write(
        tmp_path / "mountinfo",
        "27 1 254:0 / / rw - ext4 /dev/vda rw\n"
        "51 27 0:46 / /srv/with\\040space rw - tmpfs shm rw\n",
    )
    assert userns.mount_points(info) == {"/", "/srv/with space"}
    # Nothing listed is mounted: nothing is unmounted (and umount is never run).
    assert userns.release(["/not/mounted", ""], info) == []


async def test_doctor_says_how_to_add_the_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = (write(tmp_path / "subuid", ""), write(tmp_path / "subgid", ""))
    monkeypatch.setattr(userns, "SUBID_FILES", files)
    check = await check_userns(NodeConfig(node_slug="d"))
    assert not check.ok and "/etc/subuid" in check.fix and "sandbox.userns: host" in check.fix
    assert (await check_userns(NodeConfig(node_slug="d", sandbox_userns="host"))).ok
    files[0].write_text("containers:2147483647:2147483648\n")
    files[1].write_text("containers:2147483647:2147483648\n")
    assert (await check_userns(NodeConfig(node_slug="d"))).ok


def test_config_accepts_auto_and_host_only() -> None:
    assert validate(NodeConfig(node_slug="d", sandbox_userns="host")).sandbox_userns == "host"
    with pytest.raises(ConfigError, match=r"sandbox\.userns must be one of"):
        validate(NodeConfig(node_slug="d", sandbox_userns="keep-id"))
