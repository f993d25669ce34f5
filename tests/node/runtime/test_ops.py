"""The upload retry for Podman's spurious copier "broken pipe" (buildah issue 6573).

The real upload path runs in every attachment/script test against Podman; here a stub
API stands in only to make Podman fail the way it does under load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from podman.errors import APIError

from cynode.node.runtime import ops


@dataclass
class _Response:
    status_code: int
    text: str = ""

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise APIError(self.text)


@dataclass
class _Api:
    answers: list[_Response]
    calls: list[dict[str, Any]] = field(default_factory=list)

    def put(self, path: str, **kwargs: Any) -> _Response:
        self.calls.append({"path": path, **kwargs})
        return self.answers.pop(0)


@dataclass
class _Client:
    api: _Api


BROKEN = _Response(500, '{"message":"passing bulk input to subprocess: write |1: broken pipe"}')


def test_broken_pipe_is_retried_until_it_works() -> None:
    client = _Client(_Api([BROKEN, BROKEN, _Response(200)]))
    ops.put_archive(client, "c1", "/workspace", b"tar")  # type: ignore[arg-type]
    assert len(client.api.calls) == 3
    assert client.api.calls[0]["params"] == {"path": "/workspace"}


def test_broken_pipe_gives_up_after_the_attempts() -> None:
    client = _Client(_Api([BROKEN, BROKEN, BROKEN]))
    with pytest.raises(APIError):
        ops.put_archive(client, "c1", "/workspace", b"tar")  # type: ignore[arg-type]


def test_other_errors_are_not_retried() -> None:
    client = _Client(_Api([_Response(404, "no such container")]))
    with pytest.raises(APIError):
        ops.put_archive(client, "c1", "/workspace", b"tar")  # type: ignore[arg-type]
    assert len(client.api.calls) == 1
