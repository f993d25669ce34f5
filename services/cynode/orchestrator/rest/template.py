"""google.api.http path templates: parsed once at start-up, matched per request.

Grammar (google/api/http.proto):
    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    Verb     = ":" LITERAL ;

Matching runs on the raw (still percent-encoded) path so that a `%2F` inside a
single-segment variable is data, not a separator; values are decoded afterwards.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LITERAL = re.compile(r"[^/{}*:=]+")
_ENCODED_SLASH = re.compile(r"%2[Ff]")


class TemplateError(ValueError):
    """A path template that the grammar does not allow."""


@dataclass(frozen=True)
class Variable:
    field_path: tuple[str, ...]
    # True unless the variable captures exactly one `*` segment: then a `%2F` in the
    # captured text stays encoded, as http.proto asks for multi-segment variables.
    multi_segment: bool

    @property
    def name(self) -> str:
        return ".".join(self.field_path)


@dataclass(frozen=True)
class PathTemplate:
    source: str
    pattern: re.Pattern[str]
    variables: tuple[Variable, ...]
    # How many literal segments (and the verb) a template pins down; more literals
    # win when two templates match the same path.
    literal_count: int
    has_double_wildcard: bool
    openapi_path: str

    def match(self, raw_path: str) -> dict[tuple[str, ...], str] | None:
        """The decoded variable values when `raw_path` matches, else None."""
        found = self.pattern.fullmatch(raw_path)
        if found is None:
            return None
        values: dict[tuple[str, ...], str] = {}
        for index, variable in enumerate(self.variables):
            raw = found.group(f"v{index}")
            values[variable.field_path] = _decode(raw, variable.multi_segment)
        return values


def _decode(raw: str, multi_segment: bool) -> str:
    if not multi_segment:
        return unquote(raw, errors="strict")
    pieces = _ENCODED_SLASH.split(raw)
    return "%2F".join(unquote(piece, errors="strict") for piece in pieces)


def _split_top_level(text: str, separator: str) -> list[str]:
    """Splits on `separator` outside braces."""
    parts: list[str] = []
    depth = 0
    start = 0
    for index, char in enumerate(text):
        if char == "{":
            depth += 1
            if depth > 1:
                raise TemplateError("nested variables are not allowed")
        elif char == "}":
            depth -= 1
            if depth < 0:
                raise TemplateError("unbalanced '}'")
        elif char == separator and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    if depth != 0:
        raise TemplateError("unbalanced '{'")
    parts.append(text[start:])
    return parts


def _split_verb(path: str) -> tuple[str, str | None]:
    """Separates a trailing `:verb` (a colon outside braces after the last slash)."""
    depth = 0
    last_slash = -1
    colon = -1
    for index, char in enumerate(path):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif depth == 0 and char == "/":
            last_slash = index
            colon = -1
        elif depth == 0 and char == ":" and colon < 0 and index > last_slash:
            colon = index
    if colon < 0:
        return path, None
    verb = path[colon + 1 :]
    if not _LITERAL.fullmatch(verb):
        raise TemplateError(f"bad verb {verb!r}")
    return path[:colon], verb


class _Builder:
    def __init__(self) -> None:
        self.regex: list[str] = []
        self.openapi: list[str] = []
        self.variables: list[Variable] = []
        self.literals = 0
        self.double_wildcard = False

    def plain_segment(self, segment: str) -> tuple[str, str]:
        """Regex and OpenAPI text of a segment that is not a variable."""
        if segment == "*":
            return "[^/]+", "*"
        if segment == "**":
            self.double_wildcard = True
            return ".*", "**"
        if not _LITERAL.fullmatch(segment):
            raise TemplateError(f"bad segment {segment!r}")
        self.literals += 1
        return re.escape(segment), segment

    def variable(self, segment: str) -> tuple[str, str]:
        inner = segment[1:-1]
        field_text, _, sub_template = inner.partition("=")
        field_path = tuple(field_text.split("."))
        if not all(_IDENT.fullmatch(part) for part in field_path):
            raise TemplateError(f"bad field path {field_text!r}")
        sub_segments = sub_template.split("/") if sub_template else ["*"]
        parts: list[str] = []
        for sub in sub_segments:
            if sub.startswith("{"):
                raise TemplateError("nested variables are not allowed")
            parts.append(self.plain_segment(sub)[0])
        multi = sub_segments != ["*"]
        index = len(self.variables)
        self.variables.append(Variable(field_path, multi))
        return f"(?P<v{index}>{'/'.join(parts)})", "{" + ".".join(field_path) + "}"


def parse_template(source: str) -> PathTemplate:
    """Compiles one HttpRule path; raises TemplateError on a malformed one."""
    if not source.startswith("/"):
        raise TemplateError(f"template {source!r} must start with '/'")
    path, verb = _split_verb(source)
    builder = _Builder()
    for segment in _split_top_level(path[1:], "/"):
        if segment.startswith("{") and segment.endswith("}"):
            regex, openapi = builder.variable(segment)
        else:
            regex, openapi = builder.plain_segment(segment)
        builder.regex.append(regex)
        builder.openapi.append(openapi)
    names = [v.field_path for v in builder.variables]
    if len(set(names)) != len(names):
        raise TemplateError(f"template {source!r} binds a field twice")
    pattern = "/" + "/".join(builder.regex)
    openapi_path = "/" + "/".join(builder.openapi)
    literal_count = builder.literals
    if verb is not None:
        pattern += ":" + re.escape(verb)
        openapi_path += ":" + verb
        literal_count += 1
    return PathTemplate(
        source=source,
        pattern=re.compile(pattern),
        variables=tuple(builder.variables),
        literal_count=literal_count,
        has_double_wildcard=builder.double_wildcard,
        openapi_path=openapi_path,
    )
