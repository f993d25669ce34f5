"""Reflection and health on both gRPC ports, seen by generic clients only."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from tests.contract.stack import ROOT, Stack

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

HEALTH = "grpc.health.v1.Health"
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"


def _declared(package: str) -> set[str]:
    files = descriptor_pb2.FileDescriptorSet.FromString(
        (ROOT / "gen" / "descriptors" / "cynode.binpb").read_bytes()
    )
    return {f"{f.package}.{s.name}" for f in files.file if f.package == package for s in f.service}


def _port(stack: Stack, surface: str) -> tuple[str, set[str]]:
    if surface == "gateway":
        return stack.grpc_target, _declared("cynode.gateway.v1")
    return stack.control_grpc_target, _declared("cynode.controlplane.v1")


@pytest.mark.parametrize("surface", ["gateway", "controlplane"])
def test_reflection_lists_every_service_and_describes_it(stack: Stack, surface: str) -> None:
    target, declared = _port(stack, surface)
    assert declared
    with grpc.insecure_channel(target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        listed = set(database.get_services())
        assert listed == declared | {HEALTH, REFLECTION}
        for name in declared:
            # Each service resolves to its file, with its methods, over reflection alone.
            found = database.FindFileContainingSymbol(name)
            service = next(s for s in found.service if f"{found.package}.{s.name}" == name)
            assert service.method, name


@pytest.mark.parametrize("surface", ["gateway", "controlplane"])
def test_health_is_serving_for_every_service(stack: Stack, surface: str) -> None:
    target, declared = _port(stack, surface)
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ["", *sorted(declared)]:
            reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
        with pytest.raises(grpc.RpcError) as err:
            health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
