"""How results reach stdout: `key=value` lines (table mode) or JSON objects (json mode).

Table mode prints one object per line so `grep` and `awk` work on it; a value holding
spaces, quotes or newlines is double-quoted with JSON escapes so the line stays one line.
JSON mode prints exactly one JSON value whose keys are the REST fields, pretty-printed
for a terminal and compact for a pipe; the streaming commands (`task watch`, `task logs
-F`) print one compact value per event instead (NDJSON). Everything else goes to stderr.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import click

TABLE = "table"
JSON = "json"
OUTPUT_MODES = (TABLE, JSON)


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        # A list of names (attachments): comma-separated, quoted only when it must be.
        value = ",".join(value)
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    if text == "" or any(c.isspace() or c in "\"'\\" for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


def format_kv(obj: Mapping[str, Any], keys: Iterable[str] | None = None) -> str:
    """`k=v` pairs; absent and empty values are left out to keep lines short."""
    chosen = obj.keys() if keys is None else [k for k in keys if k in obj]
    return " ".join(
        f"{key}={format_value(obj[key])}"
        for key in chosen
        if obj[key] is not None and obj[key] != "" and obj[key] != []
    )


class RecentTaskIds:
    """Task ids and names seen in this process's output, newest last (shell completion)."""

    def __init__(self, limit: int = 200) -> None:
        self._limit = limit
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, value: object) -> None:
        if not isinstance(value, str) or not value:
            return
        self._ids.pop(value, None)
        self._ids[value] = None
        while len(self._ids) > self._limit:
            self._ids.popitem(last=False)

    def note(self, obj: Any) -> None:
        """Remembers task_id/task_name of an object and of any nested task list."""
        if isinstance(obj, Mapping):
            self.add(obj.get("task_id"))
            self.add(obj.get("task_name"))
            inner = obj.get("tasks")
            if isinstance(inner, list):
                for item in inner:
                    self.note(item)

    def newest_first(self) -> list[str]:
        return list(reversed(self._ids))

    def __len__(self) -> int:
        return len(self._ids)


class Output:
    """The one place commands write results to stdout (and remarks to stderr)."""

    def __init__(
        self,
        mode: str = TABLE,
        recent: RecentTaskIds | None = None,
        *,
        pretty: bool = False,
        quiet: bool = False,
        color: bool = True,
    ) -> None:
        self.mode = mode
        self.recent = recent if recent is not None else RecentTaskIds()
        # JSON for a person (stdout is a terminal) is indented; for a program, compact.
        self.pretty = pretty
        self.quiet = quiet
        # False: no escape sequences at all (no spinner, no screen redraw).
        self.color = color

    @property
    def is_json(self) -> bool:
        return self.mode == JSON

    def json_line(self, obj: Any) -> None:
        """The command's one JSON value."""
        self.recent.note(obj)
        indent = 2 if self.pretty else None
        separators = None if self.pretty else (",", ":")
        click.echo(json.dumps(obj, ensure_ascii=False, indent=indent, separators=separators))

    def json_event(self, obj: Any) -> None:
        """One event of a stream: always one compact line, so readers can split lines."""
        self.recent.note(obj)
        click.echo(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))

    def note(self, message: str) -> None:
        """A human remark (progress, confirmation); never stdout, and none with -q."""
        if not self.quiet:
            click.echo(message, err=True)

    def warn(self, message: str) -> None:
        """Something the user must know even with -q (the command still succeeded)."""
        click.echo(f"cynork: {message}", err=True)

    def obj(self, obj: Mapping[str, Any], keys: Iterable[str] | None = None) -> None:
        """One object: a JSON object, or a `k=v` line (limited to `keys` when given)."""
        if self.is_json:
            self.json_line(dict(obj))
            return
        self.recent.note(obj)
        click.echo(format_kv(obj, keys))

    def text(self, text: str, *, err: bool = False) -> None:
        """Raw output (a job's stdout), with exactly one newline at the end."""
        if text:
            click.echo(text, nl=not text.endswith("\n"), err=err)

    def result(self, result: Mapping[str, Any]) -> None:
        """A task result: its status line, then the job's stdout and stderr once terminal."""
        if self.is_json:
            self.json_line(dict(result))
            return
        self.obj(result, ("task_id", "task_name", "status", "reason"))
        self.text(str(result.get("stdout") or ""))
        # Job stderr goes to our stderr so `cynork task result X > out` keeps only stdout.
        self.text(str(result.get("stderr") or ""), err=True)
