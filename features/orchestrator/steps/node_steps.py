"""Steps for node registration and config delivery over the control plane's REST port
(context.control_rest_url, context.node_psk from environment.py)."""

from __future__ import annotations

from typing import Any

import httpx
from behave import given, then, when
from google.protobuf import json_format
from ulid import ULID

from cynode.controlplane.v1 import nodes_pb2


def _capability(slug: str) -> dict[str, Any]:
    return {
        "version": 1,
        "reported_at": "2025-01-01T00:00:00Z",
        "node": {"node_slug": slug, "name": slug, "labels": ["bdd"]},
        "platform": {"os": "linux", "arch": "amd64"},
        "container_runtime": {"runtime": "podman", "version": "4.3"},
        "compute": {"cpu_cores": 2, "ram_mb": 2048},
        "gpu": {"present": False},
        "sandbox": {"supported": True, "features": ["network_none"], "max_concurrency": 2},
        "inference": {
            "supported": True,
            "mode": "existing",
            "existing_service": True,
            "running": True,
            "models": ["smollm2"],
        },
        "worker_api": {"base_url": "http://127.0.0.1:12090"},
    }


def _client(context: Any) -> httpx.Client:
    client = getattr(context, "node_http", None)
    if client is None:
        client = httpx.Client(base_url=context.control_rest_url, timeout=30)
        context.node_http = client
        context.add_cleanup(client.close)
    return client


def _register(context: Any, slug: str, psk: str) -> httpx.Response:
    resp = _client(context).post(
        "/v1/nodes/register", json={"psk": psk, "capability": _capability(slug)}
    )
    context.response = resp
    if resp.status_code == 200:
        context.registrations = [*getattr(context, "registrations", []), resp.json()]
    return resp


def _auth(context: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {context.registrations[-1]['auth']['node_jwt']}"}


@when('node "{slug}" registers with the correct pre-shared key')
def register_ok(context: Any, slug: str) -> None:
    _register(context, slug, context.node_psk)


@given('node "{slug}" has registered with the correct pre-shared key')
def registered(context: Any, slug: str) -> None:
    resp = _register(context, slug, context.node_psk)
    assert resp.status_code == 200, resp.text


@when('node "{slug}" registers with the pre-shared key "{psk}"')
def register_with(context: Any, slug: str, psk: str) -> None:
    _register(context, slug, psk)


@then("the control plane answers {status:d}")
def answers(context: Any, status: int) -> None:
    assert context.response.status_code == status, (
        context.response.status_code,
        context.response.text,
    )


@then('the control plane answers {status:d} with a problem that does not contain "{secret}"')
def answers_problem(context: Any, status: int, secret: str) -> None:
    answers(context, status)
    assert context.response.headers["content-type"].startswith("application/problem+json")
    assert secret not in context.response.text


@then("the bootstrap payload has version 1, the orchestrator endpoints and a node JWT")
def bootstrap(context: Any) -> None:
    body = context.response.json()
    assert body["version"] == 1, body
    assert body["issued_at"]
    assert body["orchestrator"]["base_url"]
    assert body["orchestrator"]["endpoints"]["control_plane_grpc"]
    assert body["auth"]["node_jwt"].count(".") == 2
    assert body["auth"]["expires_at"] > body["issued_at"]
    assert body["node_id"]


@then("the bootstrap's initial_config_version is a ULID")
def initial_ulid(context: Any) -> None:
    ULID.from_str(context.response.json()["initial_config_version"])


@then("both registrations name the same node id")
def same_node(context: Any) -> None:
    first, second = context.registrations[-2:]
    assert first["node_id"] == second["node_id"]
    assert first["auth"]["node_jwt"]


@when("the node fetches its configuration")
def fetch_config(context: Any) -> None:
    context.response = _client(context).get("/v1/nodes/config", headers=_auth(context))
    if context.response.status_code == 200:
        context.configs = [*getattr(context, "configs", []), context.response.json()]


@when("the configuration is fetched without a token")
def fetch_without_token(context: Any) -> None:
    context.response = _client(context).get("/v1/nodes/config")


@then("the configuration has version 1 and a ULID config_version equal to the initial one")
def config_version(context: Any) -> None:
    config = context.configs[-1]
    assert config["version"] == 1
    ULID.from_str(config["config_version"])
    assert config["config_version"] == context.registrations[-1]["initial_config_version"]
    assert config["node_slug"] == "bdd-cfg-1"


@then("the configuration has the sandbox defaults")
def sandbox_defaults(context: Any) -> None:
    config = context.configs[-1]
    sandbox = config["sandbox"]
    assert sandbox["default_image"]
    assert sandbox["timeouts"]["default_seconds"] > 0
    assert sandbox["timeouts"]["max_seconds"] >= sandbox["timeouts"]["default_seconds"]
    assert sandbox["max_output_bytes"] == 262144
    assert config["constraints"]["max_request_bytes"] == 10 * 1024 * 1024
    assert "inference" in config


def _ack(context: Any, version: str, status: str, error: str = "") -> None:
    body = {
        "version": 1,
        "node_slug": "bdd-cfg-1",
        "config_version": version,
        "ack_at": "2025-01-01T00:00:00Z",
        "status": status,
    }
    if error:
        body["error"] = error
    context.response = _client(context).post("/v1/nodes/config", json=body, headers=_auth(context))


@when('the node acknowledges that configuration as "{status}"')
def ack_config(context: Any, status: str) -> None:
    _ack(context, context.configs[-1]["config_version"], status)


@when('the node reports that configuration failed with error "{error}"')
def ack_config_error(context: Any, error: str) -> None:
    _ack(context, context.configs[-1]["config_version"], "failed", error)


@when('the node acknowledges config version "{version}" as "{status}"')
def ack_version(context: Any, version: str, status: str) -> None:
    _ack(context, version, status)


@then("the acknowledgement is accepted")
def ack_accepted(context: Any) -> None:
    assert context.response.json().get("accepted") is True, context.response.text


@then("the config_version has not changed")
def unchanged(context: Any) -> None:
    assert context.configs[-1]["config_version"] == context.configs[-2]["config_version"]


# --- capability reports: upstream's form (the report as the body) and ours (wrapped) ---


def _upstream_report(slug: str) -> dict[str, Any]:
    """A report with every field set to a non-default value, so "what GET /v1/nodes shows
    equals what was sent" compares every field, none hidden by default printing."""
    report = _capability(slug)
    report["reported_at"] = "2026-06-01T12:30:00Z"
    report["platform"] = {
        "os": "linux",
        "arch": "arm64",
        "distro": "debian-12",
        "kernel_version": "6.1.0",
    }
    report["compute"] = {"cpu_cores": 8, "ram_mb": 16384, "storage_free_mb": 51200}
    report["gpu"] = {"present": True}
    report["sandbox"]["max_concurrency"] = 3
    report["inference"]["models"] = ["qwen3:8b", "smollm2"]
    report["worker_api"] = {"base_url": "http://10.0.0.8:12090"}
    return report


def _node_listing(context: Any, slug: str) -> dict[str, Any]:
    with httpx.Client(base_url=context.rest_url, timeout=30) as client:
        login = client.post(
            "/v1/auth/login", json={"handle": "admin", "password": context.admin_password}
        )
        assert login.status_code == 200, login.text
        token = login.json()["access_token"]
        resp = client.get("/v1/nodes", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.text
    nodes = [n for n in resp.json()["nodes"] if n["node_slug"] == slug]
    assert len(nodes) == 1, resp.json()
    node: dict[str, Any] = nodes[0]
    return node


def _report(context: Any, body: Any) -> None:
    context.response = _client(context).post(
        "/v1/nodes/capability", json=body, headers=_auth(context)
    )


@when('node "{slug}" reports an upstream-shaped capability report as the body')
def report_upstream(context: Any, slug: str) -> None:
    context.sent_report = _upstream_report(slug)
    _report(context, context.sent_report)


@when('node "{slug}" reports a capability report wrapped in "capability"')
def report_wrapped(context: Any, slug: str) -> None:
    context.sent_report = _upstream_report(slug)
    context.sent_report["compute"]["cpu_cores"] = 16
    _report(context, {"capability": context.sent_report})


@when("the node reports a body that is neither form")
def report_neither(context: Any) -> None:
    # Upstream-looking keys this schema does not know: parsed, they would be nothing.
    _report(context, {"capabilities": {"cpu": 8}, "hostname": "x"})


@when("the node reports a body with the report both wrapped and inline")
def report_both(context: Any) -> None:
    report = _upstream_report("bdd-cap-3")
    _report(context, {"capability": report, "compute": report["compute"]})


@then('GET /v1/nodes shows node "{slug}" with exactly the report it sent')
def listing_shows_sent(context: Any, slug: str) -> None:
    shown = _node_listing(context, slug)
    # JSON prints every field, so fields the report left out come back at their default.
    sent = json_format.MessageToDict(
        json_format.ParseDict(context.sent_report, nodes_pb2.CapabilityReport()),
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    assert shown["capability"] == sent, (shown["capability"], sent)
    assert shown["max_concurrency"] == context.sent_report["sandbox"]["max_concurrency"]


@then('GET /v1/nodes still shows node "{slug}" with the report it registered with')
def listing_shows_registered(context: Any, slug: str) -> None:
    shown = _node_listing(context, slug)["capability"]
    assert shown["node"]["node_slug"] == slug, shown
    assert shown["compute"]["cpu_cores"] == _capability(slug)["compute"]["cpu_cores"], shown
