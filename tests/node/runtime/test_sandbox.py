"""The sandbox rules as create kwargs, and what podman-py makes of them for Podman 4.3."""

from __future__ import annotations

from typing import Any

from podman.domain.containers_create import CreateMixin

from cynode.node.runtime import SandboxSettings, build_create_kwargs
from cynode.node.runtime.sandbox import object_name, sandbox_env
from tests.node.runtime.conftest import make_spec


def _kwargs(**spec_fields: Any) -> dict[str, Any]:
    spec = make_spec(job_id="J1", task_id="T1", attempt=2, commands=["true"], **spec_fields)
    settings = SandboxSettings(node_id="n1", memory_mb=256, cpus=0.5, pids=32)
    return build_create_kwargs(spec, settings, command=["true"], name="c", volume_name="v")


def test_sandbox_rules() -> None:
    kw = _kwargs()
    assert kw["network_mode"] == "none"
    assert kw["user"] == "10000:10000"
    assert kw["cap_drop"] == ["ALL"]
    assert kw["no_new_privileges"] is True
    assert kw["read_only"] is True
    assert kw["read_write_tmpfs"] is False
    assert kw["mem_limit"] == kw["memswap_limit"] == 256 * 1024 * 1024
    assert (kw["cpu_period"], kw["cpu_quota"]) == (100_000, 50_000)
    assert kw["pids_limit"] == 32
    assert kw["working_dir"] == "/workspace"
    assert kw["init"] is True
    assert kw["image"] == "localhost/cynode-sandbox"


def test_labels_name_job_task_node_attempt() -> None:
    assert _kwargs()["labels"] == {
        "cynode.job_id": "J1",
        "cynode.task_id": "T1",
        "cynode.node_id": "n1",
        "cynode.attempt": "2",
        "cynode.role": "sandbox",
    }


def test_job_image_overrides_the_default() -> None:
    assert _kwargs(image="localhost/other")["image"] == "localhost/other"


def test_env_has_ids_and_job_env_but_ours_win() -> None:
    spec = make_spec(
        job_id="J1",
        task_id="T1",
        commands=["true"],
        env={"A": "1", "CYNODE_JOB_ID": "forged", "BAD-NAME": "x", "NUL": "a\x00b"},
    )
    assert sandbox_env(spec) == {"A": "1", "CYNODE_JOB_ID": "J1", "CYNODE_TASK_ID": "T1"}


def test_object_names_are_podman_safe() -> None:
    spec = make_spec(job_id="../we ird/ID", attempt=3, commands=["true"])
    assert object_name("job", spec, "abc") == "cynode-job-we-ird-ID-3-abc"
    assert object_name("ws", make_spec(job_id="///", commands=["x"]), "s").startswith(
        "cynode-ws-job-"
    )


def test_podman_py_renders_every_rule_into_the_libpod_payload() -> None:
    # The boundary with podman-py: an unknown or unsupported kwarg would raise here, and a
    # silently dropped one (as nano_cpus is) would be missing from the payload.
    payload = CreateMixin._render_payload(_kwargs())
    assert payload["netns"] == {"nsmode": "none"}
    assert payload["no_new_privileges"] is True
    assert payload["read_only_filesystem"] is True
    assert payload["cap_drop"] == ["ALL"]
    assert payload["user"] == "10000:10000"
    assert payload["resource_limits"]["pids"] == {"limit": 32}
    assert payload["resource_limits"]["cpu"]["quota"] == 50_000
    assert payload["resource_limits"]["memory"]["limit"] == 256 * 1024 * 1024
    assert payload["mounts"] == [
        {
            "destination": "/tmp",
            "options": [f"size={256 * 1024 * 1024}"],
            "source": "tmpfs",
            "type": "tmpfs",
        }
    ]
    assert payload["volumes"] == [
        {"Name": "v", "Dest": "/workspace", "Options": ["rw", "nodev", "nosuid"]}
    ]
    assert payload["env"]["CYNODE_JOB_ID"] == "J1"
