"""The orchestrator's node config mapped onto sandbox settings: defaults kept, constraints
folded in, impossible values rejected."""

from __future__ import annotations

import pytest

from cynode.controlplane.v1 import nodes_pb2
from cynode.node.applied_config import ConfigRejected, apply_node_config
from cynode.node.runtime.settings import SandboxSettings


def config_message(**sandbox: object) -> nodes_pb2.GetNodeConfigResponse:
    msg = nodes_pb2.GetNodeConfigResponse(config_version="01JV")
    msg.sandbox.default_image = str(sandbox.get("image", ""))
    msg.sandbox.limits.memory_mb = int(sandbox.get("memory_mb", 0))  # type: ignore[call-overload]
    msg.sandbox.timeouts.default_seconds = int(sandbox.get("default", 0))  # type: ignore[call-overload]
    msg.sandbox.timeouts.max_seconds = int(sandbox.get("max", 0))  # type: ignore[call-overload]
    msg.constraints.max_job_timeout_seconds = int(sandbox.get("constraint", 0))  # type: ignore[call-overload]
    return msg


def test_apply_keeps_defaults_for_zero_fields_and_folds_constraints() -> None:
    base = SandboxSettings(node_id="N1")
    applied = apply_node_config(config_message(), base)
    assert applied.settings == base
    assert applied.max_request_bytes == 10 * 1024 * 1024
    applied = apply_node_config(
        config_message(image="localhost/x", memory_mb=64, default=7200, max=9000, constraint=600),
        base,
    )
    assert applied.settings.image == "localhost/x"
    assert applied.settings.memory_mb == 64
    assert applied.settings.max_timeout_s == 600
    assert applied.settings.default_timeout_s == 600
    assert applied.settings.node_id == "N1"
    assert applied.config_version == "01JV"
    with pytest.raises(ConfigRejected, match="below 6"):
        apply_node_config(config_message(memory_mb=3), base)
    with pytest.raises(ConfigRejected, match="max_seconds is negative"):
        apply_node_config(config_message(max=-1), base)
