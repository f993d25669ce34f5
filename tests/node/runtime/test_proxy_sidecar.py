"""The inference pod's podman-py arguments and the sandbox's env (pure)."""

from __future__ import annotations

import dataclasses
from typing import Any

from cynode.node.runtime import SandboxSettings, build_create_kwargs
from cynode.node.runtime.labels import job_labels
from cynode.node.runtime.proxy_sidecar import (
    CONTROL_DIR,
    UPSTREAM_DIR,
    inference_env,
    job_model,
    pod_create_kwargs,
    proxy_host_create_kwargs,
    sandbox_shared_volume,
    shared_volume_options,
    sidecar_create_kwargs,
)
from cynode.node.runtime.settings import InferencePodSettings
from tests.node.runtime.conftest import make_spec

POD = InferencePodSettings(relay_socket="/state/inference/relay.sock", proxy_timeout_s=7.5)


def test_env_names_the_proxy_over_tcp_and_uds_and_the_model_when_known() -> None:
    assert inference_env("m:1") == {
        "OLLAMA_BASE_URL": "http://localhost:11434",
        "OLLAMA_HOST": "http://localhost:11434",
        "INFERENCE_PROXY_URL": "http+unix://%2Frun%2Fcynode-inference%2Fproxy.sock",
        "CYNODE_MODEL": "m:1",
    }
    assert "CYNODE_MODEL" not in inference_env("")


def test_without_sandbox_tcp_the_sandbox_is_offered_the_socket_alone() -> None:
    assert inference_env("m:1", sandbox_tcp=False) == {
        "INFERENCE_PROXY_URL": "http+unix://%2Frun%2Fcynode-inference%2Fproxy.sock",
        "CYNODE_MODEL": "m:1",
    }
    socket_only = InferencePodSettings(relay_socket="/r.sock", sandbox_tcp=False)
    kwargs = sidecar_create_kwargs(
        socket_only,
        labels={},
        name="s",
        pod="p",
        shared_volume="v",
        relay_dir="/r",
        relay_socket_name="r.sock",
    )
    listens = [kwargs["command"][i + 1] for i, w in enumerate(kwargs["command"]) if w == "--listen"]
    assert listens == ["unix:/run/cynode-inference/proxy.sock"]


def test_the_job_model_wins_over_the_node_default() -> None:
    node_default = InferencePodSettings(relay_socket="/r", default_model="dflt")
    assert job_model(make_spec(commands=["x"], model="mine"), node_default) == "mine"
    assert job_model(make_spec(commands=["x"]), node_default) == "dflt"
    assert job_model(make_spec(commands=["x"]), POD) == ""


def test_pod_is_labelled_and_has_no_network() -> None:
    spec = make_spec(commands=["x"], job_id="J1")
    kwargs = pod_create_kwargs(job_labels(spec, "node-1", role="pod"))
    assert kwargs["netns"] == {"nsmode": "none"}
    assert kwargs["labels"]["cynode.node_id"] == "node-1"
    assert kwargs["labels"]["cynode.job_id"] == "J1"
    assert kwargs["labels"]["cynode.role"] == "pod"


def test_sidecar_is_locked_down_and_alone_sees_the_relay() -> None:
    spec = make_spec(commands=["x"])
    kwargs = sidecar_create_kwargs(
        POD,
        labels=job_labels(spec, "n", role="proxy"),
        name="side",
        pod="pod-id",
        shared_volume="vol",
        relay_dir="/state/inference",
        relay_socket_name="relay.sock",
    )
    assert kwargs["command"] == [
        "--listen",
        "127.0.0.1:11434",
        "--listen",
        "unix:/run/cynode-inference/proxy.sock",
        "--upstream",
        "unix:/run/cynode-upstream/relay.sock",
        "--timeout",
        "7.5",
        "--max-body-bytes",
        str(10 * 1024 * 1024),
    ]
    assert (kwargs["user"], kwargs["cap_drop"], kwargs["read_only"]) == (
        "10000:10000",
        ["ALL"],
        True,
    )
    assert kwargs["no_new_privileges"] and kwargs["init"] and kwargs["pod"] == "pod-id"
    assert kwargs["mem_limit"] == kwargs["memswap_limit"] == 64 * 1024 * 1024
    bind = [m for m in kwargs["mounts"] if m["type"] == "bind"]
    assert bind == [
        {
            "type": "bind",
            "source": "/state/inference",
            "target": "/run/cynode-upstream",
            "read_only": True,
        }
    ]
    assert kwargs["volumes"]["vol"]["bind"] == "/run/cynode-inference"
    assert "network_mode" not in kwargs
    assert kwargs["labels"]["cynode.role"] == "proxy"


def test_sandbox_in_a_pod_joins_its_network_and_mounts_the_shared_volume_read_only() -> None:
    spec = make_spec(commands=["x"], env={"OLLAMA_BASE_URL": "http://evil:1"})
    kwargs = build_create_kwargs(
        spec,
        SandboxSettings(),
        command=["true"],
        name="c",
        volume_name="ws",
        pod="pod-id",
        extra_env=inference_env(""),
        extra_volumes=sandbox_shared_volume("inf"),
    )
    assert kwargs["pod"] == "pod-id"
    assert "network_mode" not in kwargs and "hostname" not in kwargs
    # The node's values win over a job that tries to point the sandbox elsewhere.
    assert kwargs["environment"]["OLLAMA_BASE_URL"] == "http://localhost:11434"
    assert kwargs["volumes"]["ws"]["bind"] == "/workspace"
    assert kwargs["volumes"]["inf"] == {
        "bind": "/run/cynode-inference",
        "extended_mode": ["ro", "nodev", "nosuid", "noexec"],
    }
    plain = build_create_kwargs(spec, SandboxSettings(), command=["t"], name="c", volume_name="w")
    assert plain["network_mode"] == "none" and "pod" not in plain


def test_shared_volume_belongs_to_the_sandbox_uid() -> None:
    assert shared_volume_options("host") == {"o": "uid=10000,gid=10000"}


def one_job_host(settings: InferencePodSettings) -> dict[str, Any]:
    return proxy_host_create_kwargs(
        settings,
        labels={},
        name="n",
        relay_dir="/r",
        control_dir="/c",
        jobs=1,
        control_socket_name="host.sock",
    )


def test_the_proxy_host_has_the_sidecars_jail_sized_for_the_nodes_jobs() -> None:
    settings = InferencePodSettings(relay_socket="/s/inference/relay.sock", proxy_image="img")
    kwargs = proxy_host_create_kwargs(
        settings,
        labels={"cynode.role": "proxy-host"},
        name="cynode-proxyhost-x",
        relay_dir="/s/inference",
        control_dir="/s/proxy-host",
        jobs=3,
        control_socket_name="host.sock",
    )
    assert kwargs["command"] == [
        "host",
        "--control",
        f"unix:{CONTROL_DIR}/host.sock",
        "--max-connections",
        "64",
    ]
    assert (kwargs["user"], kwargs["cap_drop"], kwargs["no_new_privileges"]) == (
        "10000:10000",
        ["ALL"],
        True,
    )
    assert (kwargs["read_only"], kwargs["network_mode"], kwargs["init"]) == (True, "none", True)
    assert kwargs["mem_limit"] == kwargs["memswap_limit"] == (64 + 64 * 3) * 1024 * 1024
    assert kwargs["pids_limit"] == 16 + 4 * 3
    # Open files enough for the job's child's limit, whatever the engine's default.
    assert kwargs["ulimits"] == [
        {"Name": "nofile", "Soft": 1024, "Hard": 1024},
        {"Name": "nproc", "Soft": 1024, "Hard": 1024},
    ]
    wide = one_job_host(dataclasses.replace(settings, job_max_connections=1000))
    assert wide["command"][-1] == "1000"
    assert wide["ulimits"][0] == {"Name": "nofile", "Soft": 2032, "Hard": 2032}
    assert "pod" not in kwargs and kwargs["labels"] == {"cynode.role": "proxy-host"}
    relay = {"type": "bind", "source": "/s/inference", "target": UPSTREAM_DIR, "read_only": True}
    assert relay in kwargs["mounts"]
    # Its own control directory, given to its user; nothing else of the host's.
    assert kwargs["volumes"] == {
        "/s/proxy-host": {
            "bind": CONTROL_DIR,
            "extended_mode": ["rw", "U", "nodev", "nosuid", "noexec"],
        }
    }
    # A user namespace of its own, as the node's sandboxes (userns auto).
    assert kwargs["userns_mode"] == {"nsmode": "auto"}
    host = one_job_host(dataclasses.replace(settings, userns="host"))
    assert "userns_mode" not in host and "idmappings" not in host
