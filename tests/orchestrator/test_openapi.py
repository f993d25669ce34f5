"""The generated OpenAPI documents: complete, internally consistent, deterministic.

openapi-spec-validator is not a dependency, so the checks a validator would make
that matter here (references resolve, path parameters match templates, unique
operation ids, 3.1 shapes) are made by hand below.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from google.api import annotations_pb2, http_pb2  # type: ignore[import-untyped]
from google.protobuf import descriptor_pb2, duration_pb2, wrappers_pb2

from cynode.orchestrator import openapi
from cynode.orchestrator.openapi import Surface, build_document, render

ROOT = Path(__file__).resolve().parents[2]
DESCRIPTORS = ROOT / "gen" / "descriptors" / "cynode.binpb"
FILES = openapi.load_descriptor_set(DESCRIPTORS)
F = descriptor_pb2.FieldDescriptorProto
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def check_structure(document: dict[str, Any]) -> None:
    """What an OpenAPI 3.1 validator would insist on, for the parts we generate."""
    assert document["openapi"] == "3.1.0"
    assert {"title", "version"} <= set(document["info"])
    for ref in _refs(document):
        _resolve(document, ref)
    operation_ids: list[str] = []
    for path, item in document["paths"].items():
        assert path.startswith("/")
        names = set(re.findall(r"{([^}]+)}", path))
        for method, operation in item.items():
            assert method in METHODS
            operation_ids.append(operation["operationId"])
            parameters = operation.get("parameters", [])
            in_path = {p["name"] for p in parameters if p["in"] == "path"}
            assert in_path == names, (path, method)
            for parameter in parameters:
                assert parameter["in"] in ("path", "query")
                assert "schema" in parameter
                if parameter["in"] == "path":
                    assert parameter["required"] is True
            assert operation["responses"]
            for status, response in operation["responses"].items():
                assert status == "default" or re.fullmatch(r"[1-5][0-9][0-9]", status)
                assert "$ref" in response or "description" in response
            assert isinstance(operation.get("security", []), list)
    assert len(operation_ids) == len(set(operation_ids))
    for name in document["components"]["schemas"]:
        assert re.fullmatch(r"[A-Za-z0-9._-]+", name), name


def _http_methods(package: str) -> set[str]:
    names = set()
    for file in FILES.file:
        if file.package != package:
            continue
        for service in file.service:
            for method in service.method:
                if method.options.HasExtension(annotations_pb2.http):
                    names.add(f"{service.name}_{method.name}")
    return names


@pytest.fixture(scope="module")
def gateway() -> dict[str, Any]:
    return build_document(FILES, "gateway")


@pytest.fixture(scope="module")
def controlplane() -> dict[str, Any]:
    return build_document(FILES, "controlplane")


def _operation(document: dict[str, Any], operation_id: str) -> dict[str, Any]:
    for item in document["paths"].values():
        for operation in item.values():
            if operation["operationId"] == operation_id:
                return dict(operation)
    raise KeyError(operation_id)


def _schema(document: dict[str, Any], name: str) -> dict[str, Any]:
    return dict(document["components"]["schemas"][name])


@pytest.mark.parametrize("surface", ["gateway", "controlplane"])
def test_documents_are_well_formed_and_cover_every_annotated_rpc(surface: str) -> None:
    document = build_document(FILES, surface)
    check_structure(document)
    ids = {op["operationId"] for item in document["paths"].values() for op in item.values()}
    assert ids == _http_methods(openapi.SURFACES[surface].package)
    package = openapi.SURFACES[surface].package
    messages = {m.name for f in FILES.file if f.package == package for m in f.message_type}
    assert messages <= set(document["components"]["schemas"])


def test_gateway_paths_and_statuses(gateway: dict[str, Any]) -> None:
    assert set(gateway["paths"]) == {
        "/v1/auth/login",
        "/v1/auth/refresh",
        "/v1/auth/logout",
        "/v1/users/me",
        "/v1/nodes",
        "/v1/tasks",
        "/v1/tasks/{task_id}",
        "/v1/tasks/{task_id}/result",
        "/v1/tasks/{task_id}/cancel",
        "/v1/tasks/{task_id}/logs",
        "/v1/tasks/{task_id}/watch",
        "/v1/tasks/{task_id}/artifacts",
        "/v1/users",
        "/v1/users/{user_id}",
        "/v1/users/{user_id}/disable",
        "/v1/users/{user_id}/enable",
        "/v1/users/{user_id}/reset_password",
        "/v1/users/{user_id}/revoke_sessions",
        "/v1/nodes/{node_id}",
        "/v1/nodes/{node_id}/drain",
        "/v1/nodes/{node_id}/disable",
        "/v1/nodes/{node_id}/enable",
        "/v1/nodes/{node_id}/refresh_config",
        "/v1/audit",
    }
    create = _operation(gateway, "TaskService_CreateTask")
    assert "429" in create["responses"]
    # Admin services say so, and may answer 403; nothing else is marked.
    admin = {
        op["operationId"]
        for item in gateway["paths"].values()
        for op in item.values()
        if op.get("x-cynode-admin")
    }
    assert "UserService_CreateUser" in admin and "NodeAdminService_ListNodes" in admin
    assert all(
        o.split("_")[0] in ("UserService", "NodeAdminService", "AuditService") for o in admin
    )
    assert "403" in _operation(gateway, "UserService_DisableUser")["responses"]
    assert "201" in _operation(gateway, "UserService_CreateUser")["responses"]
    assert "201" in create["responses"] and "200" not in create["responses"]
    assert create["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CreateTaskResponse"
    }
    logout = _operation(gateway, "AuthService_Logout")
    assert "content" not in logout["responses"]["204"]
    watch = _operation(gateway, "TaskService_WatchTask")
    assert set(watch["responses"]["200"]["content"]) == {"application/x-ndjson"}
    # GET /v1/tasks/{task_id} is the task itself (SPEC §2); GetTask is gRPC only.
    fetch = gateway["paths"]["/v1/tasks/{task_id}"]["get"]
    assert fetch["operationId"] == "TaskService_FetchTask"
    assert fetch["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Task"
    }
    operations = {op["operationId"] for item in gateway["paths"].values() for op in item.values()}
    assert "TaskService_GetTask" not in operations
    problem = gateway["components"]["responses"]["Error"]["content"]
    assert problem == {
        "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
    }


def test_parameters(gateway: dict[str, Any]) -> None:
    listing = _operation(gateway, "TaskService_ListTasks")
    assert [(p["name"], p["in"]) for p in listing["parameters"]] == [
        ("status", "query"),
        ("limit", "query"),
        ("cursor", "query"),
    ]
    get = _operation(gateway, "TaskService_FetchTask")
    assert get["parameters"] == [
        {
            "name": "task_id",
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            "description": "ULID or task name.",
        }
    ]
    cancel = _operation(gateway, "TaskService_CancelTask")
    # The path binds task_id, so the body schema leaves it out.
    body = cancel["requestBody"]["content"]["application/json"]["schema"]
    assert "task_id" not in body["properties"]


def test_security(gateway: dict[str, Any], controlplane: dict[str, Any]) -> None:
    for document in (gateway, controlplane):
        assert document["security"] == [{"bearerAuth": []}]
        scheme = document["components"]["securitySchemes"]["bearerAuth"]
        assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    public = {"AuthService_Login", "AuthService_Refresh", "NodeService_RegisterNode"}
    for document in (gateway, controlplane):
        for item in document["paths"].values():
            for operation in item.values():
                is_public = operation["operationId"] in public
                assert (operation.get("security") == []) == is_public
                assert ("401" in operation["responses"]) != is_public


def test_schema_types(gateway: dict[str, Any], controlplane: dict[str, Any]) -> None:
    chunk = _schema(controlplane, "OutputChunk")["properties"]
    assert (chunk["offset"]["type"], chunk["offset"]["format"]) == ("string", "int64")
    assert chunk["data"]["format"] == "byte" and chunk["data"]["contentEncoding"] == "base64"
    spec = _schema(controlplane, "cynode.jobs.v1.JobSpec")["properties"]
    assert spec["env"] == {"type": "object", "additionalProperties": {"type": "string"}}
    assert spec["input_mode"] == {"$ref": "#/components/schemas/cynode.jobs.v1.InputMode"}
    status = _schema(controlplane, "cynode.jobs.v1.JobStatus")
    assert status["type"] == "string" and "JOB_STATUS_COMPLETED" in status["enum"]
    task = _schema(gateway, "Task")
    assert task["properties"]["created_at"] == {"type": "string", "format": "date-time"}
    assert task["properties"]["task_name"] == {"type": ["string", "null"]}
    assert "required" not in task
    assert _schema(gateway, "Problem")["required"] == ["type", "title", "status", "detail"]
    connect = _schema(controlplane, "ConnectRequest")
    assert "At most one of (msg)" in connect["description"]


def test_shimtest_shapes() -> None:
    surface = Surface("cynode.shimtest.v1", "shim", "test", "http://x", "token")
    document = build_document(FILES, surface)
    check_structure(document)
    update = document["paths"]["/v1/things/{thing.thing_id}"]["patch"]
    assert update["parameters"][0]["name"] == "thing.thing_id"
    assert update["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/UpdateThingRequest"
    }
    create = document["paths"]["/v1/shelves/{shelf}/things"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Thing"
    }
    assert [p["name"] for p in create["parameters"]] == ["shelf"]
    get = document["paths"]["/v1/shelves/{shelf}/things/{thing_id}"]["get"]
    query = {p["name"]: p for p in get["parameters"] if p["in"] == "query"}
    assert set(query) == {"limit", "tags", "verbose", "color"}
    assert query["tags"]["schema"] == {"type": "array", "items": {"type": "string"}}
    assert query["tags"]["explode"] is True
    assert query["color"]["schema"] == {"$ref": "#/components/schemas/Color"}
    assert "/v1/shelves/{shelf}/things:stream" in document["paths"]


def _synthetic_files() -> descriptor_pb2.FileDescriptorSet:
    """WKT wrappers, nested query messages, additional bindings and response_body."""
    files = descriptor_pb2.FileDescriptorSet()
    from google.protobuf import descriptor_pb2 as dpb

    for module in (duration_pb2, wrappers_pb2, dpb, http_pb2, annotations_pb2):
        module.DESCRIPTOR.CopyToProto(files.file.add())
    file = files.file.add(
        name="x.proto",
        package="x.v1",
        syntax="proto3",
        dependency=[
            "google/api/annotations.proto",
            "google/protobuf/duration.proto",
            "google/protobuf/wrappers.proto",
        ],
    )
    inner = file.message_type.add(name="Inner")
    inner.field.add(name="deep", number=1, type=F.TYPE_UINT64, label=F.LABEL_OPTIONAL)
    inner.field.add(name="again", number=2, type=F.TYPE_MESSAGE, type_name=".x.v1.Inner")
    req = file.message_type.add(name="Req")
    req.field.add(name="id", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    req.field.add(name="wait", number=2, type=F.TYPE_MESSAGE, type_name=".google.protobuf.Duration")
    req.field.add(
        name="maybe", number=3, type=F.TYPE_MESSAGE, type_name=".google.protobuf.Int32Value"
    )
    req.field.add(name="inner", number=4, type=F.TYPE_MESSAGE, type_name=".x.v1.Inner")
    req.field.add(
        name="inners",
        number=5,
        type=F.TYPE_MESSAGE,
        type_name=".x.v1.Inner",
        label=F.LABEL_REPEATED,
    )
    req.field.add(name="ratio", number=6, type=F.TYPE_FLOAT, label=F.LABEL_OPTIONAL)
    service = file.service.add(name="S")
    method = service.method.add(name="Do", input_type=".x.v1.Req", output_type=".x.v1.Req")
    rule = method.options.Extensions[annotations_pb2.http]
    rule.get = "/v1/x/{id}"
    rule.response_body = "inner"
    rule.additional_bindings.add(post="/v1/x", body="inner")
    service.method.add(name="Hidden", input_type=".x.v1.Req", output_type=".x.v1.Req")
    return files


def test_synthetic_shapes() -> None:
    surface = Surface("x.v1", "x", "x", "http://x", "token")
    document = build_document(_synthetic_files(), surface)
    check_structure(document)
    get = document["paths"]["/v1/x/{id}"]["get"]
    query = {p["name"]: p["schema"] for p in get["parameters"] if p["in"] == "query"}
    assert query["wait"]["type"] == "string"
    assert query["maybe"] == {"type": ["integer", "null"], "format": "int32"}
    assert query["inner.deep"] == {"type": "string", "format": "uint64"}
    assert query["inner.again.again.again.deep"]["format"] == "uint64"
    assert not any(name.startswith("inners") for name in query)
    assert query["ratio"] == {"type": "number", "format": "float"}
    assert get["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Inner"
    }
    post = document["paths"]["/v1/x"]["post"]
    assert post["operationId"] == "S_Do_1"
    assert [p["name"] for p in post.get("parameters", [])][:1] == ["id"]
    assert [tag["name"] for tag in document["tags"]] == ["S"]


def test_committed_documents_are_current(tmp_path: Path) -> None:
    written = openapi.write_documents(DESCRIPTORS, tmp_path)
    assert [p.name for p in written] == ["controlplane.openapi.json", "gateway.openapi.json"]
    for path in written:
        committed = ROOT / "gen" / "openapi" / path.name
        assert committed.read_text() == path.read_text(), f"{committed} is stale: make gen"


def test_rendering_is_deterministic() -> None:
    first = render(build_document(FILES, "gateway"))
    again = render(build_document(openapi.load_descriptor_set(DESCRIPTORS), "gateway"))
    assert first == again
    assert first.endswith("}\n")


def test_openapi_document_for_serving() -> None:
    served = openapi.openapi_document("gateway")
    assert served == json.loads(render(build_document(FILES, "gateway")))
    served["paths"].clear()
    assert openapi.openapi_document("gateway")["paths"], "callers get a copy"
    with pytest.raises(KeyError):
        openapi.openapi_document("nope")


def test_without_the_descriptor_file_the_pool_is_used() -> None:
    from_pool = build_document(openapi._descriptor_set_from_pool(), "controlplane")
    from_file = build_document(FILES, "controlplane")
    check_structure(from_pool)
    assert from_pool["paths"].keys() == from_file["paths"].keys()
    assert from_pool["components"]["schemas"].keys() == from_file["components"]["schemas"].keys()


def test_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert openapi.main([]) == 2
    assert openapi.main([str(DESCRIPTORS), str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "gateway.openapi.json").is_file()
    assert "controlplane.openapi.json" in capsys.readouterr().out
