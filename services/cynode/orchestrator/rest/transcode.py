"""HTTP request pieces to a request message, and response messages to JSON."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from google.protobuf import json_format
from google.protobuf.message import Message

from cynode.orchestrator.rest.bindings import Binding
from cynode.orchestrator.rest.fields import FieldValueError, resolve_path, set_field

# Errors json_format lets escape on odd input besides its own ParseError.
_PARSE_ERRORS = (
    json_format.ParseError,
    ValueError,
    TypeError,
    AttributeError,
    KeyError,
    IndexError,
    RecursionError,
)
_DETAIL_LIMIT = 300


class RequestError(ValueError):
    """The request does not fit its RPC: HTTP 400, with a detail safe to show."""


def _short(text: str) -> str:
    return text if len(text) <= _DETAIL_LIMIT else text[: _DETAIL_LIMIT - 3] + "..."


def _load_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise RequestError("request body is not valid JSON") from exc


def _apply_body(binding: Binding, message: Message, raw: bytes) -> None:
    if not raw.strip():
        return
    document = _load_json(raw)
    if binding.body == "*":
        if not isinstance(document, dict):
            raise RequestError("request body must be a JSON object")
    else:
        document = {binding.body: document}
    try:
        # Unknown fields are dropped, as Envoy's transcoder does (it has no option to
        # refuse them): one answer through either door, and older servers accept
        # requests from newer clients.
        json_format.ParseDict(document, message, ignore_unknown_fields=True)
    except _PARSE_ERRORS as exc:
        raise RequestError(_short(f"request body: {exc}")) from exc


def _overlaps(path: tuple[str, ...], bound: tuple[tuple[str, ...], ...]) -> bool:
    for other in bound:
        shorter = min(len(path), len(other))
        if path[:shorter] == other[:shorter]:
            return True
    return False


def _apply_query(binding: Binding, message: Message, query: str) -> None:
    if binding.body == "*" or not query:
        return
    grouped: dict[str, list[str]] = defaultdict(list)
    for key, value in parse_qsl(query, keep_blank_values=True):
        grouped[key].append(value)
    bound = binding.bound_paths
    descriptor = message.DESCRIPTOR
    for key, values in grouped.items():
        path = tuple(key.split("."))
        try:
            fields = resolve_path(descriptor, path)
        except FieldValueError as exc:
            raise RequestError(_short(f"query parameter {exc}")) from exc
        if fields is None:
            continue  # unknown parameters are ignored, as Envoy is configured to
        canonical = tuple(field.name for field in fields)
        if _overlaps(canonical, bound):
            continue
        try:
            set_field(message, fields, values)
        except FieldValueError as exc:
            raise RequestError(_short(f"query parameter {exc}")) from exc


def build_request(
    binding: Binding,
    path_values: Mapping[tuple[str, ...], str],
    query: str,
    body: bytes,
) -> Message:
    """The request message: body first, then path variables, then query parameters."""
    message = binding.request_class()
    if binding.body:
        _apply_body(binding, message, body)
    for path, value in path_values.items():
        fields = resolve_path(message.DESCRIPTOR, path)
        assert fields is not None  # checked when the binding was made
        try:
            set_field(message, fields, [value])
        except FieldValueError as exc:
            raise RequestError(_short(f"path parameter {exc}")) from exc
    _apply_query(binding, message, query)
    return message


def message_to_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )


def _response_value(binding: Binding, message: Message) -> Any:
    rendered = message_to_dict(message)
    if not binding.response_body:
        return rendered
    return rendered.get(binding.response_body)


def encode_response(binding: Binding, message: Message) -> bytes:
    if not isinstance(message, binding.response_class):
        raise TypeError(
            f"{binding.full_name} returned {type(message).__name__}, "
            f"not {binding.method.output_type.name}"
        )
    value = _response_value(binding, message)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
