"""Output capture: decoding Podman's multiplexed log frames (and a warm sandbox runner's
frames inside them) and byte-capped buffers."""

from __future__ import annotations

import hmac
import json
import struct
from dataclasses import dataclass

STDOUT = "stdout"
STDERR = "stderr"
# A warm sandbox runner's report of the job's end (images/sandbox/cynode_warm.py).
END = "end"
_HEADER = struct.Struct(">BxxxL")
_STREAMS = {1: STDOUT, 2: STDERR}
_RUNNER_STREAMS = {1: STDOUT, 2: STDERR, 3: END}
_HELLO = 4


class FrameDecoder:
    """Splits the logs/attach byte stream into (stream, payload) pairs.

    Each frame: 1 byte stream id (1 stdout, 2 stderr), 3 padding bytes, a 4-byte
    big-endian length, then the payload. Frames may arrive split across reads.
    """

    def __init__(self, streams: dict[int, str] | None = None) -> None:
        self._buffer = bytearray()
        self._streams = _STREAMS if streams is None else streams

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
            stream = self._streams.get(stream_id)
            if stream is not None and payload:
                frames.append((stream, payload))
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame still waiting for the rest."""
        return len(self._buffer)


@dataclass(frozen=True)
class RunnerEnd:
    """The job's end as the warm sandbox's runner saw it: exit code (128 + signal when
    killed), whether the memory cgroup's OOM kill count grew (None: unknown), and
    whether /workspace/out held nothing (then there is nothing to collect)."""

    exit_code: int
    oom: bool | None
    out_empty: bool

    @classmethod
    def parse(cls, payload: bytes, nonce: str) -> RunnerEnd | None:
        """The end frame's JSON, if it is well formed and carries the nonce."""
        try:
            body = json.loads(payload)
        except ValueError:
            return None
        if not isinstance(body, dict) or not isinstance(body.get("nonce"), str):
            return None
        if not hmac.compare_digest(body["nonce"].encode(), nonce.encode()):
            return None
        code, oom, empty = body.get("exit_code"), body.get("oom"), body.get("out_empty")
        if type(code) is not int or not (oom is None or isinstance(oom, bool)):
            return None
        return cls(code, oom, empty is True)


class RunnerStream:
    """A reporting warm sandbox runner's stdout: the job's stdout and stderr and its end,
    each framed like Podman's stream, after a hello frame carrying the node's nonce.

    The hello tells a runner that frames from one that does not (an image older than
    the node: the job then writes to stdout itself), so until it is complete the bytes
    are held; anything else first means raw stdout, passed on as it is.
    """

    def __init__(self, nonce: str) -> None:
        self.nonce = nonce
        self._hello = _HEADER.pack(_HELLO, len(nonce.encode())) + nonce.encode()
        self._held = bytearray()
        self.framed: bool | None = None
        self._frames = FrameDecoder(_RUNNER_STREAMS)

    def feed(self, data: bytes) -> list[tuple[str, bytes]]:
        if self.framed is None:
            self._held += data
            if self._held.startswith(self._hello):
                self.framed = True
                data = bytes(self._held[len(self._hello) :])
                self._held.clear()
            elif self._hello.startswith(self._held):
                return []
            else:
                self.framed = False
                data = bytes(self._held)
                self._held.clear()
        if not self.framed:
            return [(STDOUT, data)] if data else []
        return self._frames.feed(data)

    def flush(self) -> list[tuple[str, bytes]]:
        """At the stream's end: held bytes that never became a hello are raw stdout."""
        held, self._held = bytes(self._held), bytearray()
        return [(STDOUT, held)] if held else []


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
