"""OpenAPI 3.1 documents generated from the proto descriptors and their HttpRules.

Nothing here is written by hand per endpoint: paths, parameters, bodies and schemas
all come from the descriptor set (with its comments), read through the same template
parser the REST shim routes with. The only hand-kept facts are the two small tables
below, which say what the servicers do at run time that a descriptor cannot.

    python -m cynode.orchestrator.openapi gen/descriptors/cynode.binpb gen/openapi
"""

from __future__ import annotations

import json
import pkgutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import import_module
from pathlib import Path
from typing import Any

from google.api import annotations_pb2  # type: ignore[import-untyped]
from google.protobuf import descriptor_pb2, descriptor_pool

from cynode.orchestrator.rest.bindings import rule_verb_and_path
from cynode.orchestrator.rest.problems import PROBLEM_JSON
from cynode.orchestrator.rest.template import PathTemplate, Variable, parse_template

F = descriptor_pb2.FieldDescriptorProto

# Success statuses the servicers set through the `x-http-status` trailer.
SUCCESS_STATUS: dict[str, int] = {
    "cynode.gateway.v1.TaskService.CreateTask": 201,
    "cynode.gateway.v1.AuthService.Logout": 204,
    "cynode.gateway.v1.UserService.CreateUser": 201,
}
# Methods that may answer 429 (a throttle or a quota), with Retry-After where waiting helps.
LIMITED_METHODS = frozenset(
    {
        "cynode.gateway.v1.AuthService.Login",
        "cynode.gateway.v1.TaskService.CreateTask",
    }
)
# Services for administrators only: every operation may answer 403 and is marked
# `x-cynode-admin: true` (a test walks them all as a non-admin).
ADMIN_SERVICES = frozenset(
    {
        "cynode.gateway.v1.NodeAdminService",
        "cynode.gateway.v1.UserService",
        "cynode.gateway.v1.AuditService",
    }
)
# Methods callable without a bearer token.
PUBLIC_METHODS = frozenset(
    {
        "cynode.gateway.v1.AuthService.Login",
        "cynode.gateway.v1.AuthService.Refresh",
        "cynode.controlplane.v1.NodeService.RegisterNode",
    }
)


@dataclass(frozen=True)
class Surface:
    package: str
    title: str
    description: str
    server: str
    bearer_description: str


SURFACES: dict[str, Surface] = {
    "gateway": Surface(
        package="cynode.gateway.v1",
        title="CyNode user gateway",
        description="Accounts, sessions and tasks: the REST surface cynork uses.",
        server="http://localhost:12080",
        bearer_description="An access token from POST /v1/auth/login.",
    ),
    "controlplane": Surface(
        package="cynode.controlplane.v1",
        title="CyNode control plane",
        description="Node registration, capability reports and configuration delivery.",
        server="http://localhost:12082",
        bearer_description="The node JWT from POST /v1/nodes/register.",
    ),
}

NDJSON = "application/x-ndjson"
_REF = "#/components/schemas/"
_MAX_QUERY_DEPTH = 4

# Source-info path numbers (descriptor.proto).
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 4, 5, 6
_MESSAGE_FIELD, _MESSAGE_NESTED, _MESSAGE_ENUM = 2, 3, 4
_SERVICE_METHOD = 2

_INT32 = {"type": "integer", "format": "int32"}
_UINT32 = {"type": "integer", "format": "int64", "minimum": 0, "maximum": 4294967295}
_SCALARS: dict[int, dict[str, Any]] = {
    F.TYPE_DOUBLE: {"type": "number", "format": "double"},
    F.TYPE_FLOAT: {"type": "number", "format": "float"},
    F.TYPE_INT64: {"type": "string", "format": "int64"},
    F.TYPE_SINT64: {"type": "string", "format": "int64"},
    F.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    F.TYPE_UINT64: {"type": "string", "format": "uint64"},
    F.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    F.TYPE_INT32: _INT32,
    F.TYPE_SINT32: _INT32,
    F.TYPE_SFIXED32: _INT32,
    F.TYPE_UINT32: _UINT32,
    F.TYPE_FIXED32: _UINT32,
    F.TYPE_BOOL: {"type": "boolean"},
    F.TYPE_STRING: {"type": "string"},
    F.TYPE_BYTES: {"type": "string", "format": "byte", "contentEncoding": "base64"},
}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
    },
}
_WRAPPED = {
    "DoubleValue": F.TYPE_DOUBLE,
    "FloatValue": F.TYPE_FLOAT,
    "Int64Value": F.TYPE_INT64,
    "UInt64Value": F.TYPE_UINT64,
    "Int32Value": F.TYPE_INT32,
    "UInt32Value": F.TYPE_UINT32,
    "BoolValue": F.TYPE_BOOL,
    "StringValue": F.TYPE_STRING,
    "BytesValue": F.TYPE_BYTES,
}
for _name, _kind in _WRAPPED.items():
    _WELL_KNOWN[f"google.protobuf.{_name}"] = {
        **_SCALARS[_kind],
        "type": [_SCALARS[_kind]["type"], "null"],
    }


def _clean_comment(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines()]
    return "\n".join(lines).strip()


@dataclass(frozen=True)
class _Message:
    proto: descriptor_pb2.DescriptorProto
    package: str
    file: str
    path: tuple[int, ...]


@dataclass(frozen=True)
class _Enum:
    proto: descriptor_pb2.EnumDescriptorProto
    package: str
    file: str
    path: tuple[int, ...]


class _Index:
    """Every message, enum, service and comment of a descriptor set, by full name."""

    def __init__(self, files: descriptor_pb2.FileDescriptorSet) -> None:
        self.messages: dict[str, _Message] = {}
        self.enums: dict[str, _Enum] = {}
        self.services: list[tuple[str, descriptor_pb2.ServiceDescriptorProto, str, int]] = []
        self.comments: dict[tuple[str, tuple[int, ...]], str] = {}
        for file in files.file:
            for location in file.source_code_info.location:
                if location.leading_comments:
                    key = (file.name, tuple(location.path))
                    self.comments[key] = _clean_comment(location.leading_comments)
            prefix = file.package
            for index, message in enumerate(file.message_type):
                self._add_message(message, prefix, file, (_FILE_MESSAGE, index))
            for index, enum in enumerate(file.enum_type):
                full = f"{prefix}.{enum.name}"
                self.enums[full] = _Enum(enum, file.package, file.name, (_FILE_ENUM, index))
            for index, service in enumerate(file.service):
                self.services.append((f"{prefix}.{service.name}", service, file.name, index))

    def _add_message(
        self,
        message: descriptor_pb2.DescriptorProto,
        prefix: str,
        file: descriptor_pb2.FileDescriptorProto,
        path: tuple[int, ...],
    ) -> None:
        full = f"{prefix}.{message.name}"
        self.messages[full] = _Message(message, file.package, file.name, path)
        for index, nested in enumerate(message.nested_type):
            self._add_message(nested, full, file, (*path, _MESSAGE_NESTED, index))
        for index, enum in enumerate(message.enum_type):
            self.enums[f"{full}.{enum.name}"] = _Enum(
                enum, file.package, file.name, (*path, _MESSAGE_ENUM, index)
            )

    def comment(self, file: str, path: tuple[int, ...]) -> str:
        return self.comments.get((file, path), "")


def _type_name(field: descriptor_pb2.FieldDescriptorProto) -> str:
    return field.type_name.lstrip(".")


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema.get("type")
    if isinstance(kind, str):
        return {**schema, "type": [kind, "null"]}
    if isinstance(kind, list):
        return schema
    return {"anyOf": [schema, {"type": "null"}]}


class _Generator:
    def __init__(self, index: _Index, surface: Surface) -> None:
        self.index = index
        self.surface = surface
        self.wanted: list[str] = []
        self.schemas: dict[str, dict[str, Any]] = {}

    # -- schemas ------------------------------------------------------------------

    def component_name(self, full_name: str) -> str:
        prefix = self.surface.package + "."
        return full_name[len(prefix) :] if full_name.startswith(prefix) else full_name

    def ref(self, full_name: str) -> dict[str, Any]:
        if full_name not in self.wanted:
            self.wanted.append(full_name)
        return {"$ref": _REF + self.component_name(full_name)}

    def is_map(self, field: descriptor_pb2.FieldDescriptorProto) -> bool:
        if field.type != F.TYPE_MESSAGE or field.label != F.LABEL_REPEATED:
            return False
        entry = self.index.messages.get(_type_name(field))
        return entry is not None and entry.proto.options.map_entry

    def single_schema(self, field: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any]:
        """The schema of one value of the field (an item, for a repeated field)."""
        if field.type in (F.TYPE_MESSAGE, F.TYPE_ENUM):
            name = _type_name(field)
            if name in _WELL_KNOWN:
                return dict(_WELL_KNOWN[name])
            return self.ref(name)
        return dict(_SCALARS[field.type])

    def field_schema(self, field: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any]:
        if self.is_map(field):
            entry = self.index.messages[_type_name(field)].proto
            value = next(f for f in entry.field if f.name == "value")
            return {"type": "object", "additionalProperties": self.single_schema(value)}
        schema = self.single_schema(field)
        if field.label == F.LABEL_REPEATED:
            return {"type": "array", "items": schema}
        if field.proto3_optional:
            return _nullable(schema)
        return schema

    def message_schema(self, full_name: str) -> dict[str, Any]:
        info = self.index.messages[full_name]
        message = info.proto
        properties: dict[str, Any] = {}
        oneofs: dict[int, list[str]] = {}
        for position, field in enumerate(message.field):
            schema = self.field_schema(field)
            comment = self.index.comment(info.file, (*info.path, _MESSAGE_FIELD, position))
            if comment:
                schema = {**schema, "description": comment}
            properties[field.name] = schema
            if field.HasField("oneof_index") and not field.proto3_optional:
                oneofs.setdefault(field.oneof_index, []).append(field.name)
        result: dict[str, Any] = {"type": "object", "properties": properties}
        notes = [self.index.comment(info.file, info.path)]
        for oneof_index, names in sorted(oneofs.items()):
            oneof_name = message.oneof_decl[oneof_index].name
            notes.append(f"At most one of ({oneof_name}): {', '.join(names)}.")
        description = "\n\n".join(note for note in notes if note)
        if description:
            result["description"] = description
        return result

    def enum_schema(self, full_name: str) -> dict[str, Any]:
        info = self.index.enums[full_name]
        result: dict[str, Any] = {
            "type": "string",
            "enum": [value.name for value in info.proto.value],
        }
        comment = self.index.comment(info.file, info.path)
        if comment:
            result["description"] = comment
        return result

    def fill_components(self) -> None:
        for full_name in sorted(self.index.messages):
            info = self.index.messages[full_name]
            if info.package == self.surface.package and not info.proto.options.map_entry:
                self.ref(full_name)
        for full_name in sorted(self.index.enums):
            if self.index.enums[full_name].package == self.surface.package:
                self.ref(full_name)
        done = 0
        # `wanted` grows while schemas are made; walk it until nothing new appears.
        while done < len(self.wanted):
            full_name = self.wanted[done]
            done += 1
            name = self.component_name(full_name)
            if full_name in self.index.messages:
                self.schemas[name] = self.message_schema(full_name)
            else:
                self.schemas[name] = self.enum_schema(full_name)
        self.schemas["Problem"] = _problem_schema()

    # -- operations ---------------------------------------------------------------

    def leaf_field(
        self, message_name: str, path: Sequence[str]
    ) -> descriptor_pb2.FieldDescriptorProto:
        return self.leaf(message_name, path)[0]

    def leaf(
        self, message_name: str, path: Sequence[str]
    ) -> tuple[descriptor_pb2.FieldDescriptorProto, str]:
        """The field at a dotted path, with its comment."""
        info = self.index.messages[message_name]
        position, field = next((i, f) for i, f in enumerate(info.proto.field) if f.name == path[0])
        if len(path) == 1:
            comment = self.index.comment(info.file, (*info.path, _MESSAGE_FIELD, position))
            return field, comment
        return self.leaf(_type_name(field), path[1:])

    def path_parameter(self, request: str, variable: Variable) -> dict[str, Any]:
        field, comment = self.leaf(request, variable.field_path)
        parameter = {
            "name": variable.name,
            "in": "path",
            "required": True,
            "schema": self.field_schema(field),
        }
        if comment:
            parameter["description"] = comment
        return parameter

    def query_parameters(
        self, message_name: str, prefix: str, bound: set[str], depth: int = 0
    ) -> Iterator[dict[str, Any]]:
        info = self.index.messages[message_name]
        for position, field in enumerate(info.proto.field):
            name = prefix + field.name
            if name in bound or self.is_map(field):
                continue
            if any(b.startswith(name + ".") for b in bound) or (
                field.type == F.TYPE_MESSAGE and _type_name(field) not in _WELL_KNOWN
            ):
                if field.label != F.LABEL_REPEATED and depth < _MAX_QUERY_DEPTH:
                    yield from self.query_parameters(
                        _type_name(field), name + ".", bound, depth + 1
                    )
                continue
            parameter: dict[str, Any] = {
                "name": name,
                "in": "query",
                "required": False,
                "schema": self.field_schema(field),
            }
            comment = self.index.comment(info.file, (*info.path, _MESSAGE_FIELD, position))
            if comment:
                parameter["description"] = comment
            if field.label == F.LABEL_REPEATED:
                parameter["explode"] = True
            yield parameter

    def request_body(self, request: str, body: str, bound: set[str]) -> dict[str, Any]:
        if body == "*":
            top_bound = {name for name in bound if "." not in name}
            if top_bound:
                full = self.message_schema(request)
                schema = {
                    **full,
                    "properties": {
                        k: v for k, v in full["properties"].items() if k not in top_bound
                    },
                }
            else:
                schema = self.ref(request)
        else:
            schema = self.field_schema(self.leaf_field(request, [body]))
        return {"required": False, "content": {"application/json": {"schema": schema}}}

    def operation(
        self,
        service: str,
        method: descriptor_pb2.MethodDescriptorProto,
        comment: str,
        template: PathTemplate,
        body: str,
        response_body: str,
        suffix: str,
    ) -> dict[str, Any]:
        full_name = f"{service}.{method.name}"
        request = _type_name_of(method.input_type)
        response = _type_name_of(method.output_type)
        bound = {variable.name for variable in template.variables}
        parameters = [self.path_parameter(request, variable) for variable in template.variables]
        if body != "*":
            query_bound = bound | ({body} if body else set())
            parameters.extend(self.query_parameters(request, "", query_bound))
        operation: dict[str, Any] = {
            "operationId": f"{service.rsplit('.', 1)[-1]}_{method.name}{suffix}",
            "tags": [service.rsplit(".", 1)[-1]],
            "responses": self.responses(full_name, method, response, response_body, body),
        }
        if comment:
            operation["summary"] = comment.splitlines()[0]
            if "\n" in comment:
                operation["description"] = comment
        if parameters:
            operation["parameters"] = parameters
        if body:
            operation["requestBody"] = self.request_body(request, body, bound)
        if full_name in PUBLIC_METHODS:
            operation["security"] = []
        if service in ADMIN_SERVICES:
            operation["x-cynode-admin"] = True
        return operation

    def responses(
        self,
        full_name: str,
        method: descriptor_pb2.MethodDescriptorProto,
        response: str,
        response_body: str,
        body: str,
    ) -> dict[str, Any]:
        status = SUCCESS_STATUS.get(full_name, 200)
        schema = (
            self.field_schema(self.leaf_field(response, [response_body]))
            if response_body
            else self.ref(response)
        )
        success: dict[str, Any]
        if status == 204:
            success = {"description": "No content."}
        elif method.server_streaming:
            success = {
                "description": (
                    "Newline-delimited JSON: one message a line, sent as produced. "
                    'A failure after the first line ends the stream with {"error": Problem}.'
                ),
                "content": {NDJSON: {"schema": schema}},
            }
        else:
            success = {
                "description": "Success.",
                "content": {"application/json": {"schema": schema}},
            }
        result: dict[str, Any] = {
            str(status): success,
            "400": {"$ref": "#/components/responses/BadRequest"},
            "default": {"$ref": "#/components/responses/Error"},
        }
        if full_name not in PUBLIC_METHODS:
            result["401"] = {"$ref": "#/components/responses/Unauthorized"}
        if full_name in LIMITED_METHODS:
            result["429"] = {"$ref": "#/components/responses/TooManyRequests"}
        if full_name.rsplit(".", 1)[0] in ADMIN_SERVICES:
            result["403"] = {"$ref": "#/components/responses/Forbidden"}
        if body:
            result["413"] = {"$ref": "#/components/responses/PayloadTooLarge"}
        return result

    def paths(self) -> tuple[dict[str, Any], list[dict[str, str]]]:
        paths: dict[str, dict[str, Any]] = {}
        tags: list[dict[str, str]] = []
        for service_name, service, file, service_index in sorted(self.index.services):
            if not service_name.startswith(self.surface.package + "."):
                continue
            routed = False
            for method_index, method in enumerate(service.method):
                if not method.options.HasExtension(annotations_pb2.http):
                    continue
                routed = True
                rule = method.options.Extensions[annotations_pb2.http]
                comment = self.index.comment(
                    file, (_FILE_SERVICE, service_index, _SERVICE_METHOD, method_index)
                )
                for number, binding in enumerate([rule, *rule.additional_bindings]):
                    verb, source = rule_verb_and_path(binding)
                    template = parse_template(source)
                    suffix = f"_{number}" if number else ""
                    item = paths.setdefault(template.openapi_path, {})
                    item[verb.lower()] = self.operation(
                        service_name,
                        method,
                        comment,
                        template,
                        binding.body,
                        binding.response_body,
                        suffix,
                    )
            if routed:
                tag = {"name": service.name}
                description = self.index.comment(file, (_FILE_SERVICE, service_index))
                if description:
                    tag["description"] = description
                tags.append(tag)
        return paths, sorted(tags, key=lambda t: t["name"])


def _type_name_of(type_name: str) -> str:
    return type_name.lstrip(".")


def _problem_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "An RFC 9457 problem. `type` is stable: urn:cynode:problem:<slug>.",
        "properties": {
            "type": {"type": "string", "format": "uri"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
        },
        "required": ["type", "title", "status", "detail"],
    }


def _problem_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": {"$ref": _REF + "Problem"}}},
    }


def build_document(
    files: descriptor_pb2.FileDescriptorSet, surface: str | Surface
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of one surface ("gateway", "controlplane" or your own)."""
    spec = SURFACES[surface] if isinstance(surface, str) else surface
    generator = _Generator(_Index(files), spec)
    paths, tags = generator.paths()
    generator.fill_components()
    return {
        "openapi": "3.1.0",
        "info": {"title": spec.title, "version": "v1", "description": spec.description},
        "servers": [{"url": spec.server}],
        "tags": tags,
        "paths": paths,
        "security": [{"bearerAuth": []}],
        "components": {
            "schemas": generator.schemas,
            "responses": {
                "BadRequest": _problem_response("Malformed request (invalid-argument)."),
                "Unauthorized": _problem_response("Missing, expired or revoked token."),
                "PayloadTooLarge": _problem_response("Request body over the size cap."),
                "Forbidden": _problem_response("The caller is not an administrator."),
                "TooManyRequests": {
                    **_problem_response("Throttled or over a quota (SPEC §3.9)."),
                    "headers": {
                        "Retry-After": {
                            "description": "Seconds to wait, where waiting helps.",
                            "schema": {"type": "integer"},
                        }
                    },
                },
                "Error": _problem_response("Any other failure, as problem+json."),
            },
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": spec.bearer_description,
                }
            },
        },
    }


def render(document: dict[str, Any]) -> str:
    """Stable text: sorted keys, fixed indentation, trailing newline."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def load_descriptor_set(path: Path) -> descriptor_pb2.FileDescriptorSet:
    return descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())


def _committed_descriptor_path() -> Path | None:
    """gen/descriptors/cynode.binpb next to the generated packages, in a source tree."""
    for module in ("cynode.gateway.v1.auth_pb2",):
        origin = import_module(module).__file__
        if origin:
            candidate = Path(origin).resolve().parents[3] / "descriptors" / "cynode.binpb"
            if candidate.is_file():
                return candidate
    return None


def _descriptor_set_from_pool() -> descriptor_pb2.FileDescriptorSet:
    """The surfaces' files from the default pool (no comments), for installed wheels."""
    pool = descriptor_pool.Default()
    names: list[str] = []
    for surface in SURFACES.values():
        package = import_module(surface.package)
        for info in pkgutil.iter_modules(package.__path__):
            if info.name.endswith("_pb2"):
                module = import_module(f"{surface.package}.{info.name}")
                names.append(module.DESCRIPTOR.name)
    result = descriptor_pb2.FileDescriptorSet()
    seen: set[str] = set()

    def add(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        file = pool.FindFileByName(name)
        for dependency in file.dependencies:
            add(dependency.name)
        file.CopyToProto(result.file.add())

    for name in sorted(names):
        add(name)
    return result


@cache
def _default_descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    path = _committed_descriptor_path()
    return load_descriptor_set(path) if path is not None else _descriptor_set_from_pool()


@cache
def _cached_document(surface: str) -> str:
    return render(build_document(_default_descriptor_set(), surface))


def openapi_document(surface: str) -> dict[str, Any]:
    """The document to serve at /openapi.json (a fresh copy; safe to mutate)."""
    if surface not in SURFACES:
        raise KeyError(f"unknown surface {surface!r}; one of {sorted(SURFACES)}")
    document: dict[str, Any] = json.loads(_cached_document(surface))
    return document


def write_documents(descriptor_path: Path, outdir: Path) -> list[Path]:
    files = load_descriptor_set(descriptor_path)
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for surface in sorted(SURFACES):
        target = outdir / f"{surface}.openapi.json"
        target.write_text(render(build_document(files, surface)), encoding="utf-8")
        written.append(target)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m cynode.orchestrator.openapi DESCRIPTOR_SET OUTDIR", file=sys.stderr)
        return 2
    for path in write_documents(Path(args[0]), Path(args[1])):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
