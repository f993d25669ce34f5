"""From service descriptors to HTTP bindings: which HttpRule calls which servicer method.

Read once at start-up, so a malformed rule or a missing servicer method stops the
process instead of failing one request later.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from google.api import annotations_pb2, http_pb2  # type: ignore[import-untyped]
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message import Message

from cynode.orchestrator.rest.fields import FieldValueError, resolve_path
from cynode.orchestrator.rest.template import PathTemplate, parse_template

_PATTERNS = ("get", "put", "post", "delete", "patch")


class BindingError(ValueError):
    """An HttpRule or servicer the shim cannot serve."""


@dataclass(frozen=True)
class Binding:
    """One HTTP method + path template bound to one RPC."""

    http_method: str
    template: PathTemplate
    method: MethodDescriptor
    # "" (no body), "*" (the whole request) or a top-level field name.
    body: str
    response_body: str
    request_class: type[Message]
    response_class: type[Message]
    handler: Callable[..., Any]

    @property
    def full_name(self) -> str:
        return self.method.full_name

    @property
    def server_streaming(self) -> bool:
        return bool(self.method.server_streaming)

    @property
    def bound_paths(self) -> tuple[tuple[str, ...], ...]:
        """Field paths the path and a field body fill, so queries must leave them be."""
        paths = tuple(variable.field_path for variable in self.template.variables)
        if self.body and self.body != "*":
            paths += ((self.body,),)
        return paths


def http_rules(method: MethodDescriptor) -> list[http_pb2.HttpRule]:
    """The method's HttpRule and its additional bindings (none when unannotated)."""
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return []
    rule = options.Extensions[annotations_pb2.http]
    return [rule, *rule.additional_bindings]


def rule_verb_and_path(rule: http_pb2.HttpRule) -> tuple[str, str]:
    pattern = rule.WhichOneof("pattern")
    if pattern == "custom":
        return rule.custom.kind.upper(), rule.custom.path
    if pattern in _PATTERNS:
        return pattern.upper(), str(getattr(rule, pattern))
    raise BindingError(f"HttpRule without a pattern: {rule}")


def _check_fields(method: MethodDescriptor, template: PathTemplate, body: str) -> None:
    request = method.input_type
    for variable in template.variables:
        try:
            fields = resolve_path(request, variable.field_path)
        except FieldValueError as exc:
            raise BindingError(f"{method.full_name}: {exc}") from exc
        if fields is None:
            raise BindingError(f"{method.full_name}: no field {variable.name}")
    if body not in ("", "*") and body not in request.fields_by_name:
        raise BindingError(f"{method.full_name}: body field {body!r} is not a top-level field")


def _service_bindings(service: ServiceDescriptor, servicer: object) -> Iterator[Binding]:
    for method in service.methods:
        rules = http_rules(method)
        if not rules:
            continue
        if method.client_streaming:
            raise BindingError(f"{method.full_name}: client streams have no REST form")
        handler = getattr(servicer, method.name, None)
        if not callable(handler):
            raise BindingError(f"{type(servicer).__name__} lacks {method.name}")
        request_class = message_factory.GetMessageClass(method.input_type)
        for rule in rules:
            verb, path = rule_verb_and_path(rule)
            template = parse_template(path)
            _check_fields(method, template, rule.body)
            yield Binding(
                http_method=verb,
                template=template,
                method=method,
                body=rule.body,
                response_body=rule.response_body,
                request_class=request_class,
                response_class=message_factory.GetMessageClass(method.output_type),
                handler=handler,
            )


def collect_bindings(
    services: Mapping[str, object], pool: DescriptorPool | None = None
) -> list[Binding]:
    """Every HTTP binding of the given services, most specific template first."""
    pool = pool or descriptor_pool.Default()
    bindings: list[Binding] = []
    for name, servicer in services.items():
        try:
            service = pool.FindServiceByName(name)
        except KeyError as exc:
            raise BindingError(
                f"service {name} is not in the descriptor pool (import its _pb2 module)"
            ) from exc
        bindings.extend(_service_bindings(service, servicer))
    seen: dict[tuple[str, str], str] = {}
    for binding in bindings:
        key = (binding.http_method, binding.template.pattern.pattern)
        if key in seen:
            raise BindingError(f"{binding.full_name} and {seen[key]} share {key[0]} {key[1]}")
        seen[key] = binding.full_name
    bindings.sort(
        key=lambda b: (-b.template.literal_count, b.template.has_double_wildcard, b.template.source)
    )
    return bindings
