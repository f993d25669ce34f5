"""deploy/envoy.yaml serves the same REST surface as the Python shim.

Checked statically against the descriptor set and the shim's problem table; a real
Envoy runs this file in tests/contract/ (the parity table).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.api import annotations_pb2  # type: ignore[import-untyped]
from google.protobuf import descriptor_pb2

from cynode.orchestrator.app import REST_MAX_BODY_BYTES
from cynode.orchestrator.rest import DEFAULT_MAX_BODY_BYTES
from cynode.orchestrator.rest.bindings import rule_verb_and_path
from cynode.orchestrator.rest.template import parse_template

ROOT = Path(__file__).resolve().parents[2]
CONFIG = yaml.safe_load((ROOT / "deploy" / "envoy.yaml").read_text())
TRANSCODER = "envoy.filters.http.grpc_json_transcoder"
# The Python shim's request body cap on each surface (what build_rest_app is given).
SHIM_BODY_CAPS = {"user_rest": REST_MAX_BODY_BYTES, "controlplane_rest": DEFAULT_MAX_BODY_BYTES}
SURFACES = {
    # listener name: (package, REST port, upstream gRPC port)
    "user_rest": ("cynode.gateway.v1", 12180, 12081),
    "controlplane_rest": ("cynode.controlplane.v1", 12182, 12083),
}


def _listener(name: str) -> dict[str, Any]:
    listeners = CONFIG["static_resources"]["listeners"]
    return dict(next(item for item in listeners if item["name"] == name))


def _manager(name: str) -> dict[str, Any]:
    filters = _listener(name)["filter_chains"][0]["filters"]
    return dict(filters[0]["typed_config"])


def _transcoder(name: str) -> dict[str, Any]:
    filters = _manager(name)["http_filters"]
    assert filters[-1]["name"] == "envoy.filters.http.router"
    return dict(next(f for f in filters if f["name"] == TRANSCODER)["typed_config"])


def _descriptors(transcoder: dict[str, Any]) -> descriptor_pb2.FileDescriptorSet:
    path = ROOT / transcoder["proto_descriptor"]
    return descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())


def _annotated(
    files: descriptor_pb2.FileDescriptorSet, package: str
) -> dict[str, list[descriptor_pb2.MethodDescriptorProto]]:
    services: dict[str, list[descriptor_pb2.MethodDescriptorProto]] = {}
    for file in files.file:
        if file.package != package:
            continue
        for service in file.service:
            methods = [m for m in service.method if m.options.HasExtension(annotations_pb2.http)]
            if methods:
                services[f"{package}.{service.name}"] = methods
    return services


def _cluster_port(name: str) -> int:
    clusters = CONFIG["static_resources"]["clusters"]
    cluster = next(c for c in clusters if c["name"] == name)
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    options = cluster["typed_extension_protocol_options"]
    http = options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "http2_protocol_options" in http["explicit_http_config"], "gRPC needs HTTP/2"
    return int(endpoint["address"]["socket_address"]["port_value"])


def _passes_through(route: dict[str, Any]) -> bool:
    """A plain route to the gateway's REST port, with the transcoder off."""
    per_filter = route.get("typed_per_filter_config", {})
    off = per_filter.get(TRANSCODER, {}).get("disabled") is True
    assert off == (route["route"]["cluster"] == "user_http"), route
    return off


def _route_for(name: str, path: str) -> dict[str, Any]:
    routes = _manager(name)["route_config"]["virtual_hosts"][0]["routes"]
    for route in routes:
        if _matches(route["match"], path):
            return dict(route["route"])
    raise AssertionError(f"no route for {path}")


@pytest.mark.parametrize("listener", sorted(SURFACES))
def test_listener_transcodes_every_annotated_service(listener: str) -> None:
    package, rest_port, grpc_port = SURFACES[listener]
    transcoder = _transcoder(listener)
    assert not Path(transcoder["proto_descriptor"]).is_absolute()
    assert (ROOT / transcoder["proto_descriptor"]).is_file()
    annotated = _annotated(_descriptors(transcoder), package)
    assert annotated, f"no annotated services in {package}?"
    assert set(transcoder["services"]) == set(annotated)
    address = _listener(listener)["address"]["socket_address"]
    assert (address["address"], address["port_value"]) == ("127.0.0.1", rest_port)
    routes = _manager(listener)["route_config"]["virtual_hosts"][0]["routes"]
    transcoded = {r["route"]["cluster"] for r in routes if not _passes_through(r)}
    assert transcoded == {listener.replace("_rest", "_grpc")}
    assert _cluster_port(listener.replace("_rest", "_grpc")) == grpc_port


@pytest.mark.parametrize("listener", sorted(SURFACES))
def test_json_options_match_the_python_shim(listener: str) -> None:
    transcoder = _transcoder(listener)
    assert transcoder["print_options"] == {
        "add_whitespace": False,
        "always_print_primitive_fields": True,
        "always_print_enums_as_ints": False,
        "preserve_proto_field_names": True,
        "stream_newline_delimited": True,
    }
    assert transcoder["ignore_unknown_query_parameters"] is True
    assert transcoder["convert_grpc_status"] is True
    assert transcoder["query_param_unescape_plus"] is True
    assert transcoder["url_unescape_spec"] == "ALL_CHARACTERS"
    assert transcoder["request_validation_options"]["reject_unknown_method"] is True
    # The same body cap as the shim on that port: a body one door takes, the other takes.
    assert transcoder["max_request_body_size"] == SHIM_BODY_CAPS[listener]


@pytest.mark.parametrize("listener", sorted(SURFACES))
def test_streaming_routes_have_no_deadline(listener: str) -> None:
    package = SURFACES[listener][0]
    annotated = _annotated(_descriptors(_transcoder(listener)), package)
    for methods in annotated.values():
        for method in methods:
            rule = method.options.Extensions[annotations_pb2.http]
            _, source = rule_verb_and_path(rule)
            example = re.sub(r"{[^}]+}", "x", parse_template(source).openapi_path)
            route = _route_for(listener, example)
            # Every annotated path reaches the transcoder, none the plain routes.
            assert route["cluster"] == listener.replace("_rest", "_grpc"), example
            if method.server_streaming:
                assert route["timeout"] == "0s", example
                assert route["idle_timeout"] == "0s", example
            else:
                assert route["timeout"] != "0s", example


def test_ports_do_not_clash_with_the_python_shim() -> None:
    ports = {_listener(name)["address"]["socket_address"]["port_value"] for name in SURFACES}
    assert ports.isdisjoint({12080, 12081, 12082, 12083})


def _lua_source() -> str:
    filters = _manager("user_rest")["http_filters"]
    lua = next(f for f in filters if f["name"] == "envoy.filters.http.lua")
    return str(lua["typed_config"]["default_source_code"]["inline_string"])


@pytest.mark.parametrize("listener", sorted(SURFACES))
def test_problem_filter_runs_before_the_transcoder(listener: str) -> None:
    names = [f["name"] for f in _manager(listener)["http_filters"]]
    # Responses pass filters in reverse: Lua sees what the transcoder made of them.
    # The buffer filter (user_rest) is off but where a door route sets its cap.
    buffer = ["envoy.filters.http.buffer"] if listener == "user_rest" else []
    assert names == ["envoy.filters.http.lua", TRANSCODER, *buffer, "envoy.filters.http.router"]
    for item in _manager(listener)["http_filters"]:
        assert item.get("disabled", False) == (item["name"] == "envoy.filters.http.buffer")
    assert _transcoder(listener)["match_incoming_request_route"] is True


def test_lua_problem_tables_match_the_shim() -> None:
    from cynode.orchestrator.rest import problems

    source = _lua_source()
    grpc_rows = re.findall(r'\[(\d+)\] = \{(\d+), "([a-z-]+)", "([^"]+)"\}', source)
    by_code = {int(code): (int(status), slug, title) for code, status, slug, title in grpc_rows}
    expected = {
        code.value[0]: (kind.status, kind.slug, kind.title)
        for code, kind in problems.GRPC_PROBLEMS.items()
    }
    assert by_code == expected
    http_rows = re.findall(r'\[(\d+)\] = \{"([a-z-]+)", "([^"]+)"\}', source)
    by_status = {int(status): (slug, title) for status, slug, title in http_rows}
    assert by_status == {s: (k.slug, k.title) for s, k in problems.HTTP_PROBLEMS.items()}
    assert problems.TYPE_PREFIX in source


def test_streaming_route_is_marked_ndjson() -> None:
    route = next(
        r
        for r in _manager("user_rest")["route_config"]["virtual_hosts"][0]["routes"]
        if "watch" in r["match"].get("safe_regex", {}).get("regex", "")
    )
    assert route["metadata"]["filter_metadata"]["envoy.filters.http.lua"] == {"ndjson": True}


@pytest.mark.parametrize("cluster", ["user_grpc", "controlplane_grpc"])
def test_upstreams_are_health_checked_over_grpc(cluster: str) -> None:
    found = next(c for c in CONFIG["static_resources"]["clusters"] if c["name"] == cluster)
    (check,) = found["health_checks"]
    assert check["grpc_health_check"] == {"service_name": ""}


# Plain routes to the gateway's REST port: path -> (streams with no deadline, body cap).
PLAIN_ROUTES = {
    "/v1/chat/completions": (True, True),
    "/v1/embeddings": (True, True),
    "/v1/models": (False, False),
    "/v1/inference/usage": (False, False),
    "/v1/tasks/x/artifacts/y": (True, False),
    "/v1/tasks/x/artifacts.tar": (True, False),
}


@pytest.mark.parametrize("path", sorted(PLAIN_ROUTES))
def test_the_door_and_downloads_pass_to_the_gateways_rest_port(path: str) -> None:
    from cynode.orchestrator.inference.openai_door import MAX_BODY_BYTES

    unbounded, capped = PLAIN_ROUTES[path]
    routes = _manager("user_rest")["route_config"]["virtual_hosts"][0]["routes"]
    route = next(r for r in routes if _matches(r["match"], path))
    assert route["route"]["cluster"] == "user_http"
    assert (route["route"]["timeout"] == "0s") == unbounded
    per_filter = route["typed_per_filter_config"]
    # Neither the transcoder nor the problem filter: the door's errors are OpenAI's.
    assert per_filter[TRANSCODER]["disabled"] is True
    assert per_filter["envoy.filters.http.lua"]["disabled"] is True
    buffer = per_filter.get("envoy.filters.http.buffer")
    assert (buffer is not None) == capped
    if buffer is not None:
        assert buffer["buffer"]["max_request_bytes"] == MAX_BODY_BYTES
    assert _cluster_http_port("user_http") == 12080


def test_the_door_cap_answers_in_the_doors_own_shape() -> None:
    from cynode.orchestrator.inference.openai_door import MAX_BODY_BYTES

    (mapper,) = _manager("user_rest")["local_reply_config"]["mappers"]
    body = mapper["body_format_override"]["json_format"]
    assert body["error"]["message"] == f"request body is over {MAX_BODY_BYTES} bytes"
    assert body["error"]["type"] == "invalid_request_error"
    (status, path) = mapper["filter"]["and_filter"]["filters"]
    assert status["status_code_filter"]["comparison"]["value"]["default_value"] == 413
    regex = path["header_filter"]["header"]["string_match"]["safe_regex"]["regex"]
    for door in ("/v1/chat/completions", "/v1/embeddings?x=1"):
        assert re.fullmatch(regex, door)
    assert not re.fullmatch(regex, "/v1/tasks")


def test_the_annotated_artifact_listing_is_still_transcoded() -> None:
    assert _route_for("user_rest", "/v1/tasks/x/artifacts")["cluster"] == "user_grpc"


def _matches(match: dict[str, Any], path: str) -> bool:
    if "path" in match:
        return bool(match["path"] == path)
    if "safe_regex" in match:
        return re.fullmatch(match["safe_regex"]["regex"], path) is not None
    return path.startswith(match["prefix"])


def _cluster_http_port(name: str) -> int:
    clusters = CONFIG["static_resources"]["clusters"]
    cluster = next(c for c in clusters if c["name"] == name)
    # Plain HTTP/1.1 to uvicorn: no HTTP/2 options on this one.
    assert "typed_extension_protocol_options" not in cluster
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    return int(endpoint["address"]["socket_address"]["port_value"])
