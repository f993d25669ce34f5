"""cynork's artifact download on its own (SPEC §5.2): hashed and written in a thread
beside the socket reads, checked, renamed into place; a cut stream or a failed write
leaves nothing behind; and the listing's wait (?wait_seconds, SPEC §2.11)."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from cynork import GatewayClient
from cynork import _client as client_module
from cynork._download import BATCH_BYTES, save, stream_to
from cynork._errors import GatewayError, InternalError
from cynork._http import MockTransport, ReadError, Request, Response

DATA = os.urandom(5 * BATCH_BYTES + 12345)
ARTIFACT = {
    "artifact_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV",
    "name": "big.bin",
    "size_bytes": len(DATA),
    "sha256": hashlib.sha256(DATA).hexdigest(),
}


def _blocks(data: bytes, cut_after: int | None = None) -> Iterator[bytes]:
    for start in range(0, len(data), 65536):
        if cut_after is not None and start >= cut_after:
            raise ReadError("connection reset")
        yield data[start : start + 65536]


def _client(handler: Any) -> GatewayClient:
    return GatewayClient("http://127.0.0.1:12080/", token="t", transport=MockTransport(handler))


def _wait_param(request: Request) -> str | None:
    """The request's ?wait_seconds, as the gateway would read it."""
    values = parse_qs(urlsplit(request.url).query).get("wait_seconds")
    return values[0] if values else None


def _no_writer_thread() -> bool:
    return not any(t.name == "cynork-download" for t in threading.enumerate())


def test_save_writes_the_exact_bytes_and_leaves_no_partial(tmp_path: Path) -> None:
    client = _client(lambda request: Response(200, stream=_blocks(DATA)))
    target = tmp_path / "sub" / "big.bin"
    assert save(client, "T", ARTIFACT, target, progress=False) == target
    assert target.read_bytes() == DATA
    assert sorted(p.name for p in target.parent.iterdir()) == ["big.bin"]
    assert _no_writer_thread()


def test_a_download_that_does_not_match_is_removed(tmp_path: Path) -> None:
    client = _client(lambda request: Response(200, stream=_blocks(DATA[::-1])))
    target = tmp_path / "big.bin"
    with pytest.raises(GatewayError, match="is not the listed"):
        save(client, "T", ARTIFACT, target, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_cut_stream_is_an_error_and_leaves_nothing(tmp_path: Path) -> None:
    client = _client(lambda request: Response(200, stream=_blocks(DATA, cut_after=3 * BATCH_BYTES)))
    target = tmp_path / "big.bin"
    with pytest.raises(GatewayError, match="cut off"):
        save(client, "T", ARTIFACT, target, progress=False)
    assert list(tmp_path.iterdir()) == []
    assert _no_writer_thread()


class _FailingFile(io.RawIOBase):
    """A file that takes `room` bytes, then fails every write as a full disk does."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.got = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if len(self.got) + len(data) > self.room:
            raise OSError(28, "No space left on device")
        self.got += data
        return len(data)


def test_a_failed_write_stops_the_later_ones_and_reaches_the_caller() -> None:
    out = _FailingFile(BATCH_BYTES)
    resp = Response(200, stream=_blocks(DATA))
    with pytest.raises(OSError, match="No space"):
        stream_to(resp, out, lambda _: None)
    # Nothing past the failed write: what was written is a prefix of the body.
    assert bytes(out.got) == DATA[: len(out.got)] and len(out.got) <= BATCH_BYTES
    assert _no_writer_thread()


def test_a_failed_write_during_save_is_an_internal_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _client(lambda request: Response(200, stream=_blocks(DATA)))
    monkeypatch.setattr(hashlib, "sha256", _BrokenHash)
    with pytest.raises(InternalError, match="No space"):
        save(client, "T", ARTIFACT, tmp_path / "big.bin", progress=False)
    assert list(tmp_path.iterdir()) == []
    assert _no_writer_thread()


class _BrokenHash:
    """A digest whose update fails like a write to a full disk (the thread's error path
    as save() sees it)."""

    def update(self, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    def hexdigest(self) -> str:
        return ""


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_the_listing_wait_asks_the_gateway_to_hold_it_until_the_time_is_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = _Clock()
    monkeypatch.setattr(client_module, "time", clock)
    asked: list[str | None] = []

    def waiting_gateway(request: Request) -> Response:
        wait = _wait_param(request)
        asked.append(wait)
        clock.now += float(wait or 0)  # held that long; the set is still uploading
        return Response(200, json={"task_id": "T", "artifacts": [], "complete": False})

    body = _client(waiting_gateway).list_artifacts("T", wait=25)
    assert body["complete"] is False
    assert asked == ["10", "10", "5"] and clock.sleeps == []
    asked.clear()
    assert _client(waiting_gateway).list_artifacts("T")["artifacts"] == []
    assert asked == [None]


def test_the_listing_wait_ends_when_the_set_is_complete(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = _Clock()
    monkeypatch.setattr(client_module, "time", clock)
    calls = iter([(10.0, False), (1.5, True)])
    asked: list[str | None] = []

    def gateway(request: Request) -> Response:
        asked.append(_wait_param(request))
        held, complete = next(calls)
        clock.now += held  # the second call is woken by the seal after 1.5 s
        return Response(200, json={"task_id": "T", "complete": complete})

    body = _client(gateway).list_artifacts("T", wait=60)
    assert body["complete"] is True and body["artifacts"] == []
    assert asked == ["10", "10"] and clock.sleeps == []


def test_a_gateway_that_does_not_wait_is_asked_once_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = _Clock()
    monkeypatch.setattr(client_module, "time", clock)
    asked = 0

    def old_gateway(request: Request) -> Response:
        nonlocal asked
        asked += 1
        return Response(200, json={"task_id": "T", "artifacts": [], "complete": False})

    assert _client(old_gateway).list_artifacts("T", wait=3.5)["complete"] is False
    assert asked == 5 and clock.sleeps == [1.0, 1.0, 1.0, 0.5]
