"""Bindings read from descriptors: custom verbs, additional bindings, response_body,
and rules the shim must refuse at start-up."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from google.api import annotations_pb2, http_pb2  # type: ignore[import-untyped]
from google.protobuf import descriptor_pb2, descriptor_pool

from cynode.orchestrator.rest import BindingError, build_rest_app, collect_bindings

F = descriptor_pb2.FieldDescriptorProto


def _pool(
    rules: dict[str, http_pb2.HttpRule], *, client_streaming: str = ""
) -> descriptor_pool.DescriptorPool:
    """A pool holding service t.S whose methods (Req → Resp) carry the given rules."""
    pool = descriptor_pool.DescriptorPool()
    from google.protobuf import descriptor_pb2 as dpb

    for module in (dpb, http_pb2, annotations_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        pool.Add(proto)
    file = descriptor_pb2.FileDescriptorProto(
        name="t.proto", package="t", syntax="proto3", dependency=["google/api/annotations.proto"]
    )
    req = file.message_type.add(name="Req")
    req.field.add(name="id", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    req.field.add(name="n", number=2, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL)
    resp = file.message_type.add(name="Resp")
    resp.field.add(name="id", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    resp.field.add(name="n", number=2, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL)
    service = file.service.add(name="S")
    for name, rule in rules.items():
        method = service.method.add(
            name=name,
            input_type=".t.Req",
            output_type=".t.Resp",
            client_streaming=name == client_streaming,
        )
        method.options.Extensions[annotations_pb2.http].CopyFrom(rule)
    service.method.add(name="Plain", input_type=".t.Req", output_type=".t.Resp")
    pool.Add(file)
    return pool


class Servicer:
    def __init__(self, pool: descriptor_pool.DescriptorPool) -> None:
        from google.protobuf import message_factory

        self.resp = message_factory.GetMessageClass(pool.FindMessageTypeByName("t.Resp"))

    def Do(self, request: Any, context: Any) -> Any:  # a plain function works too
        return self.resp(id=request.id, n=request.n)

    Again = Do
    Plain = Do


async def test_custom_verb_additional_bindings_and_response_body() -> None:
    rule = http_pb2.HttpRule(get="/v1/a/{id}", response_body="n")
    rule.additional_bindings.add(post="/v1/b/{id}", body="n")
    rule.additional_bindings.add(custom=http_pb2.CustomHttpPattern(kind="search", path="/v1/c"))
    pool = _pool({"Do": rule})
    app = build_rest_app({"t.S": Servicer(pool)}, pool=pool)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        got = await http.get("/v1/a/x?n=4")
        assert (got.status_code, got.json()) == (200, 4)
        posted = await http.post("/v1/b/y", json=9)
        # Each additional binding has its own response_body (none here).
        assert posted.json() == {"id": "y", "n": 9}
        searched = await http.request("SEARCH", "/v1/c?id=z&n=2")
        assert searched.json() == {"id": "z", "n": 2}


def _bad(rules: dict[str, http_pb2.HttpRule], match: str, **kwargs: Any) -> None:
    pool = _pool(rules, **kwargs)
    with pytest.raises(BindingError, match=match):
        collect_bindings({"t.S": Servicer(pool)}, pool)


def test_rules_refused_at_start() -> None:
    _bad({"Do": http_pb2.HttpRule(get="/v1/{nope}")}, "no field nope")
    _bad({"Do": http_pb2.HttpRule(get="/v1/{id.x}")}, "no sub-fields")
    _bad({"Do": http_pb2.HttpRule(post="/v1/x", body="nope")}, "body field")
    _bad({"Do": http_pb2.HttpRule(body="*")}, "without a pattern")
    _bad({"Do": http_pb2.HttpRule(get="/v1/x")}, "client streams", client_streaming="Do")
    _bad(
        {"Do": http_pb2.HttpRule(get="/v1/{id}"), "Again": http_pb2.HttpRule(get="/v1/{n}")},
        "share GET",
    )


def test_unannotated_methods_are_not_routed() -> None:
    pool = _pool({"Do": http_pb2.HttpRule(get="/v1/x")})
    bindings = collect_bindings({"t.S": Servicer(pool)}, pool)
    assert [b.full_name for b in bindings] == ["t.S.Do"]
    assert bindings[0].bound_paths == ()
