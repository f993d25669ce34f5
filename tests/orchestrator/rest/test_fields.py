"""Text values into fields, including shapes the shimtest routes do not reach."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from cynode.orchestrator.rest.fields import FieldValueError, find_field, resolve_path, set_field
from cynode.shimtest.v1 import shimtest_pb2


def _wkt_message() -> Any:
    """A message with well-known-type, bytes, float and 64-bit fields, built here."""
    from google.protobuf import duration_pb2, timestamp_pb2, wrappers_pb2

    pool = descriptor_pool.DescriptorPool()
    for module in (timestamp_pb2, duration_pb2, wrappers_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        pool.Add(proto)
    file = descriptor_pb2.FileDescriptorProto(
        name="t.proto",
        package="t",
        syntax="proto3",
        dependency=[
            "google/protobuf/timestamp.proto",
            "google/protobuf/duration.proto",
            "google/protobuf/wrappers.proto",
        ],
    )
    msg = file.message_type.add(name="M")
    F = descriptor_pb2.FieldDescriptorProto
    specs = [
        ("at", F.TYPE_MESSAGE, ".google.protobuf.Timestamp", F.LABEL_OPTIONAL),
        ("wait", F.TYPE_MESSAGE, ".google.protobuf.Duration", F.LABEL_OPTIONAL),
        ("maybe", F.TYPE_MESSAGE, ".google.protobuf.BoolValue", F.LABEL_OPTIONAL),
        ("data", F.TYPE_BYTES, "", F.LABEL_OPTIONAL),
        ("ratio", F.TYPE_DOUBLE, "", F.LABEL_OPTIONAL),
        ("big", F.TYPE_INT64, "", F.LABEL_OPTIONAL),
        ("small", F.TYPE_UINT32, "", F.LABEL_REPEATED),
        ("inner", F.TYPE_MESSAGE, ".t.M", F.LABEL_OPTIONAL),
        ("many", F.TYPE_MESSAGE, ".t.M", F.LABEL_REPEATED),
    ]
    for number, (name, kind, type_name, label) in enumerate(specs, start=1):
        field = msg.field.add(name=name, number=number, type=kind, label=label)
        if type_name:
            field.type_name = type_name
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("t.M"))()


def _set(message: Any, dotted: str, *values: str) -> None:
    fields = resolve_path(message.DESCRIPTOR, tuple(dotted.split(".")))
    assert fields is not None
    set_field(message, fields, list(values))


def test_well_known_types_bytes_floats_and_int64() -> None:
    message = _wkt_message()
    _set(message, "at", "2024-05-01T10:00:00Z")
    _set(message, "wait", "1.5s")
    _set(message, "maybe", "true")
    _set(message, "data", "aGk_")
    _set(message, "ratio", "-1.5e3")
    _set(message, "big", "9007199254740993")
    _set(message, "small", "1", "2")
    _set(message, "inner.inner.big", "7")
    assert message.at.seconds == 1714557600
    assert message.wait.nanos == 500_000_000
    assert message.maybe.value is True
    assert message.data == b"hi?"
    assert message.ratio == -1500.0
    assert message.big == 9007199254740993
    assert list(message.small) == [1, 2]
    assert message.inner.inner.big == 7


@pytest.mark.parametrize(
    ("dotted", "value"),
    [
        ("at", "yesterday"),
        ("maybe", "maybe"),
        ("data", "!!!"),
        ("ratio", "1_0"),
        ("small", "-1"),
        ("inner", "x"),
        ("many", "x"),
        ("big", "99999999999999999999"),
    ],
)
def test_values_that_do_not_fit(dotted: str, value: str) -> None:
    with pytest.raises(FieldValueError):
        _set(_wkt_message(), dotted, value)


def test_paths_through_non_messages_are_errors_and_unknown_names_are_none() -> None:
    descriptor = shimtest_pb2.UpdateThingRequest.DESCRIPTOR
    with pytest.raises(FieldValueError):
        resolve_path(descriptor, ("note", "x"))
    with pytest.raises(FieldValueError):
        resolve_path(_wkt_message().DESCRIPTOR, ("many", "big"))
    assert resolve_path(descriptor, ("thing", "nope")) is None
    assert resolve_path(descriptor, ("",)) is None


def test_json_names_are_accepted() -> None:
    descriptor = shimtest_pb2.GetThingRequest.DESCRIPTOR
    field = find_field(descriptor, "thingId")
    assert field is not None and field.name == "thing_id"


def test_nested_query_style_set() -> None:
    message = shimtest_pb2.UpdateThingRequest()
    _set(message, "thing.tags", "a", "b")
    _set(message, "thing.color", "COLOR_BLUE")
    assert list(message.thing.tags) == ["a", "b"]
    assert message.thing.color == shimtest_pb2.COLOR_BLUE
