"""Output capture: decoding Podman's multiplexed log frames and byte-capped buffers."""

from __future__ import annotations

import struct
from dataclasses import dataclass

STDOUT = "stdout"
STDERR = "stderr"
_HEADER = struct.Struct(">BxxxL")
_STREAMS = {1: STDOUT, 2: STDERR}


class FrameDecoder:
    """Splits the logs/attach byte stream into (stream, payload) pairs.

    Each frame: 1 byte stream id (1 stdout, 2 stderr), 3 padding bytes, a 4-byte
    big-endian length, then the payload. Frames may arrive split across reads.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[str, bytes]]:
        self._buffer += data
        frames: list[tuple[str, bytes]] = []
        while len(self._buffer) >= _HEADER.size:
            stream_id, length = _HEADER.unpack_from(self._buffer)
            end = _HEADER.size + length
            if len(self._buffer) < end:
                break
            payload = bytes(self._buffer[_HEADER.size : end])
            del self._buffer[:end]
            stream = _STREAMS.get(stream_id)
            if stream is not None and payload:
                frames.append((stream, payload))
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame still waiting for the rest."""
        return len(self._buffer)


@dataclass(frozen=True)
class Kept:
    data: bytes
    offset: int


class StreamCapture:
    """Keeps the first `limit` bytes of one stream; counts everything."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self._data = bytearray()

    def add(self, chunk: bytes) -> Kept | None:
        """Record a chunk; return the part that was kept (cut by bytes), if any."""
        offset = len(self._data)
        self.total += len(chunk)
        room = self.limit - offset
        if room <= 0 or not chunk:
            return None
        kept = chunk[:room]
        self._data += kept
        return Kept(kept, offset)

    @property
    def data(self) -> bytes:
        return bytes(self._data)

    @property
    def truncated(self) -> bool:
        return self.total > self.limit


class OutputCapture:
    """stdout and stderr, each capped at `limit` bytes."""

    def __init__(self, limit: int) -> None:
        self.stdout = StreamCapture(limit)
        self.stderr = StreamCapture(limit)

    def add(self, stream: str, chunk: bytes) -> Kept | None:
        return (self.stdout if stream == STDOUT else self.stderr).add(chunk)
