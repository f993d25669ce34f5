"""Saving artifacts to disk: streamed into a temporary file beside the target, checked
against the SHA-256 the gateway listed, then renamed into place (SPEC §5.2). A download
that does not match is removed, never left where the user asked for it."""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import click

from cynork._client import GatewayClient
from cynork._errors import GatewayError, InternalError, UsageError
from cynork._http import Response, TransportError

# A file this large shows a progress bar when stderr is a terminal.
PROGRESS_BYTES = 8 * 1024 * 1024


def local_name(name: str) -> PurePosixPath:
    """An artifact name as a relative path that stays inside the target directory."""
    path = PurePosixPath(name)
    if not name or path.is_absolute() or any(part in ("", ".", "..") for part in path.parts):
        raise GatewayError(f"the gateway listed an artifact with an unsafe name: {name!r}")
    if "\\" in name or "\x00" in name:
        raise GatewayError(f"the gateway listed an artifact with an unsafe name: {name!r}")
    return path


def check_target(path: Path, force: bool) -> None:
    if path.is_dir():
        raise UsageError(f"{path} is a directory; --out names the file to write")
    if path.exists() and not force:
        raise UsageError(f"{path} exists; --force replaces it")


# Bytes read from the socket before they go to the writing thread as one batch, and
# how many batches may wait for it: the thread hop costs once per MiB, and at most
# about 8 MiB of the file is in memory at once.
BATCH_BYTES = 1 << 20
QUEUED_BATCHES = 8


class _Sink:
    """Hashes and writes the download in a thread of its own, in order, while the
    calling thread reads the socket: hashlib and file writes let go of the GIL for
    blocks this large, so the three run side by side on two cores instead of one
    after another. A failed write stops the later ones and is raised to the caller."""

    def __init__(self, out: Any) -> None:
        self._out = out
        self._digest = hashlib.sha256()
        self._queue: queue.Queue[list[bytes] | None] = queue.Queue(QUEUED_BATCHES)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="cynork-download", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (batch := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drained, not written: nothing past a failed write
            try:
                for block in batch:
                    self._digest.update(block)
                    self._out.write(block)
            except BaseException as exc:  # raised in the caller by put or close
                self._error = exc

    def put(self, batch: list[bytes]) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(batch)

    def close(self) -> str:
        """Waits until every batch handed over is written; the SHA-256 of them all."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._digest.hexdigest()


def stream_to(resp: Response, out: Any, on_bytes: Callable[[int], None]) -> str:
    """Writes the response's body to `out` (an open binary file); its SHA-256."""
    sink = _Sink(out)
    batch: list[bytes] = []
    held = 0
    try:
        # Blocks as the socket gives them: re-chunking to a fixed size copies every byte
        # once more (about a third of the client's time on a 128 MiB file).
        for block in resp.iter_bytes():
            batch.append(block)
            held += len(block)
            on_bytes(len(block))
            if held >= BATCH_BYTES:
                sink.put(batch)
                batch, held = [], 0
        if batch:
            sink.put(batch)
    except TransportError as exc:
        with contextlib.suppress(OSError):
            sink.close()  # the file is closed and removed next: the thread stops first
        raise GatewayError(f"the download was cut off: {type(exc).__name__}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            sink.close()
        raise
    return sink.close()


def save(
    client: GatewayClient,
    task_id: str,
    artifact: Mapping[str, Any],
    target: Path,
    *,
    progress: bool,
) -> Path:
    """Downloads one artifact to `target` (parents made); its SHA-256 is checked."""
    artifact_id = str(artifact.get("artifact_id", ""))
    expected = str(artifact.get("sha256", "")).lower()
    size = int(artifact.get("size_bytes") or 0)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InternalError(f"cannot create {target.parent}: {exc.strerror}") from exc
    partial = target.with_name(f".{target.name}.cynork-part")
    try:
        out = partial.open("wb")
    except OSError as exc:
        raise InternalError(f"cannot write {target}: {exc.strerror}") from exc
    try:
        with out, client.artifact_stream(task_id, artifact_id) as resp:
            if progress and size >= PROGRESS_BYTES:
                label = str(artifact.get("name") or artifact_id)
                bar: Any = click.progressbar(length=size, label=label, file=sys.stderr)
                with bar:
                    got = stream_to(resp, out, bar.update)
            else:
                got = stream_to(resp, out, lambda _: None)
            out.flush()
            os.fsync(out.fileno())
        if expected and got != expected:
            raise GatewayError(
                f"{target}: the download's sha256 {got} is not the listed {expected}"
            )
        partial.replace(target)
    except OSError as exc:
        raise InternalError(f"cannot write {target}: {exc.strerror}") from exc
    finally:
        with contextlib.suppress(OSError):
            partial.unlink()
    return target
