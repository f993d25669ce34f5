"""Path templates: the HttpRule grammar, parsed and matched."""

from __future__ import annotations

import pytest

from cynode.orchestrator.rest.template import TemplateError, parse_template


def test_simple_variables() -> None:
    template = parse_template("/v1/shelves/{shelf}/things/{thing_id}")
    assert template.match("/v1/shelves/a/things/b") == {("shelf",): "a", ("thing_id",): "b"}
    assert template.match("/v1/shelves/a/things") is None
    assert template.match("/v1/shelves/a/b/things/c") is None
    assert template.openapi_path == "/v1/shelves/{shelf}/things/{thing_id}"
    assert template.literal_count == 3


def test_nested_field_path() -> None:
    template = parse_template("/v1/things/{thing.thing_id}")
    assert template.match("/v1/things/x") == {("thing", "thing_id"): "x"}
    assert template.openapi_path == "/v1/things/{thing.thing_id}"


def test_variable_with_segments_keeps_encoded_slashes() -> None:
    template = parse_template("/v1/{name=shelves/*/books/**}")
    assert template.match("/v1/shelves/s1/books/a/b%2Fc%20d") == {
        ("name",): "shelves/s1/books/a/b%2Fc d"
    }
    assert template.match("/v1/shelves/s1/other/a") is None
    assert template.has_double_wildcard
    assert template.openapi_path == "/v1/{name}"


def test_single_segment_variable_decodes_slashes() -> None:
    assert parse_template("/v1/{id}").match("/v1/a%2Fb") == {("id",): "a/b"}


def test_verb() -> None:
    template = parse_template("/v1/shelves/{shelf}/things:stream")
    assert template.match("/v1/shelves/s/things:stream") == {("shelf",): "s"}
    assert template.match("/v1/shelves/s/things") is None
    assert template.literal_count == 4
    assert template.openapi_path == "/v1/shelves/{shelf}/things:stream"


def test_verb_after_variable() -> None:
    template = parse_template("/v1/{name=things/*}:cancel")
    assert template.match("/v1/things/a:b:cancel") == {("name",): "things/a:b"}


def test_wildcards_without_variables() -> None:
    template = parse_template("/v1/*/x/**")
    assert template.match("/v1/a/x/b/c") == {}
    assert template.match("/v1/a/b/x") is None
    assert template.openapi_path == "/v1/*/x/**"


@pytest.mark.parametrize(
    "source",
    [
        "v1/things",
        "/v1/{a{b}}",
        "/v1/{a",
        "/v1/a}",
        "/v1/{1bad}",
        "/v1/{a=b/{c}}",
        "/v1/a:b/c",
        "/v1/things:",
        "/v1/{a}/{a}",
        "/v1/a b=c",
    ],
)
def test_malformed_templates(source: str) -> None:
    with pytest.raises(TemplateError):
        parse_template(source)
