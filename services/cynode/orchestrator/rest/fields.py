"""Setting request fields from text: path variables and query parameters.

http.proto allows only scalars, enums, repeated scalars and a few well-known types
there; anything else is a client error, reported as FieldValueError (HTTP 400).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Sequence
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

_INTEGER = re.compile(r"-?[0-9]+")
_FLOAT = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|-?Infinity|NaN")

_INT_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
    }
)
_FLOAT_TYPES = frozenset({FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE})
_WRAPPERS = frozenset(
    f"google.protobuf.{name}Value"
    for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
)
_FROM_JSON_STRING = frozenset(
    {"google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask"}
)


class FieldValueError(ValueError):
    """A path or query value that cannot go into the field it names."""


def find_field(descriptor: Any, name: str) -> FieldDescriptor | None:
    """A field by proto name, or by JSON name as Envoy also accepts."""
    field: FieldDescriptor | None = descriptor.fields_by_name.get(name)
    if field is not None:
        return field
    for candidate in descriptor.fields:
        if candidate.json_name == name:
            found: FieldDescriptor = candidate
            return found
    return None


def resolve_path(descriptor: Any, path: Sequence[str]) -> list[FieldDescriptor] | None:
    """The fields along a dotted path; None when a name is unknown.

    Raises FieldValueError when the path runs through something that is not a
    singular message, because no value could ever be set there.
    """
    fields: list[FieldDescriptor] = []
    current = descriptor
    for position, name in enumerate(path):
        field = find_field(current, name)
        if field is None:
            return None
        fields.append(field)
        if position < len(path) - 1:
            if field.message_type is None or _is_repeated(field):
                raise FieldValueError(f"{'.'.join(path)}: {field.name} has no sub-fields")
            current = field.message_type
    return fields


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def set_field(message: Message, fields: Sequence[FieldDescriptor], values: Sequence[str]) -> None:
    """Stores `values` (one, or several for a repeated field) at the field path."""
    target = message
    for field in fields[:-1]:
        target = getattr(target, field.name)
    leaf = fields[-1]
    dotted = ".".join(f.name for f in fields)
    if _is_repeated(leaf):
        if leaf.message_type is not None:
            raise FieldValueError(f"{dotted}: repeated messages cannot come from text")
        container = getattr(target, leaf.name)
        # Converted first: _scalar's own FieldValueError (a ValueError) says what is wrong
        # ("expected an integer"); only the store below can be out of range.
        _extend(container, [_scalar(leaf, value, dotted) for value in values], dotted)
        return
    if len(values) != 1:
        raise FieldValueError(f"{dotted}: expected one value, got {len(values)}")
    value = values[0]
    if leaf.message_type is not None:
        _set_message(getattr(target, leaf.name), leaf, value, dotted)
        return
    scalar = _scalar(leaf, value, dotted)
    try:
        setattr(target, leaf.name, scalar)
    except (ValueError, TypeError) as exc:
        raise FieldValueError(f"{dotted}: value out of range") from exc


def _extend(container: Any, values: Iterable[Any], dotted: str) -> None:
    try:
        container.extend(list(values))
    except (ValueError, TypeError) as exc:
        raise FieldValueError(f"{dotted}: value out of range") from exc


def _set_message(target: Message, field: FieldDescriptor, value: str, dotted: str) -> None:
    message_type = field.message_type
    assert message_type is not None
    full_name = message_type.full_name
    if full_name in _WRAPPERS:
        inner = message_type.fields_by_name["value"]
        scalar = _scalar(inner, value, dotted)
        try:
            target.value = scalar  # type: ignore[attr-defined]
        except (ValueError, TypeError) as exc:
            raise FieldValueError(f"{dotted}: value out of range") from exc
        return
    if full_name in _FROM_JSON_STRING:
        try:
            target.FromJsonString(value)  # type: ignore[attr-defined]
        except (ValueError, TypeError) as exc:
            raise FieldValueError(f"{dotted}: {exc}") from exc
        return
    raise FieldValueError(f"{dotted}: a message cannot come from text")


def _scalar(field: FieldDescriptor, value: str, dotted: str) -> Any:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return value
    if kind == FieldDescriptor.TYPE_BOOL:
        if value in ("true", "false"):
            return value == "true"
        raise FieldValueError(f"{dotted}: expected true or false")
    if kind in _INT_TYPES:
        if not _INTEGER.fullmatch(value):
            raise FieldValueError(f"{dotted}: expected an integer")
        return int(value)
    if kind in _FLOAT_TYPES:
        if not _FLOAT.fullmatch(value):
            raise FieldValueError(f"{dotted}: expected a number")
        return float(value)
    if kind == FieldDescriptor.TYPE_ENUM:
        return _enum(field, value, dotted)
    if kind == FieldDescriptor.TYPE_BYTES:
        return _base64(value, dotted)
    raise FieldValueError(f"{dotted}: this field cannot come from text")


def _enum(field: FieldDescriptor, value: str, dotted: str) -> int:
    enum_type = field.enum_type
    assert enum_type is not None
    enum_value = enum_type.values_by_name.get(value)
    if enum_value is not None:
        return int(enum_value.number)
    if _INTEGER.fullmatch(value) and int(value) in enum_type.values_by_number:
        return int(value)
    raise FieldValueError(f"{dotted}: unknown enum value")


def _base64(value: str, dotted: str) -> bytes:
    # Either alphabet, padding optional, as proto JSON accepts.
    normal = value.replace("-", "+").replace("_", "/")
    normal += "=" * (-len(normal) % 4)
    try:
        return base64.b64decode(normal, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FieldValueError(f"{dotted}: expected base64") from exc
