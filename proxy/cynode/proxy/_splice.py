"""Zero-copy relay of one response body: upstream socket → pipe → client socket.

The body never enters Python: ``os.splice`` moves it between the two sockets through a
pipe, instead of two copies and a Python loop per chunk. To find where a chunked body
ends, only chunk headers are looked at (``MSG_PEEK``, a few bytes): a canonical header
goes on verbatim together with its data, so the client gets the upstream's framing
unchanged. Anything else (an extension, a header split across reads, the last chunk and
its trailers) is consumed here and rewritten; the last chunk is left to the caller's
``write_eof()``.

What a relayed byte costs is mostly per call, not per byte: each splice out of the
upstream socket acknowledges what it took (and so makes the upstream send more, in this
process's time), and each splice into the client socket pushes TCP segments through the
loopback. So the relay moves as much as it can per call: with ``SO_PEEK_OFF`` it peeks
at the chunk headers that follow the one in hand, past their data, without taking
anything, and moves a whole run of canonical chunks (up to a pipe-full) with one splice
in and one splice out. Where the kernel does not offer ``SO_PEEK_OFF`` on the upstream
socket (TCP before Linux 6.10), it moves one chunk per splice in.

Both sockets are dups of descriptors owned by asyncio transports: the upstream one is
paused while this runs, and the client one is written only once its transport's buffer
is empty and by nothing else until this returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import fcntl
import os
import socket
import termios
from array import array
from collections.abc import Callable

from cynode.proxy._body import TRAILER_LIMIT, BadChunk, chunk_size
from cynode.proxy._upstream import LINE_LIMIT, Framing, UpstreamError

# Filled, then emptied towards the client in one go; the first size the kernel grants is
# used. 1 MiB is the default /proc/sys/fs/pipe-max-size and measured clearly cheaper per
# byte than 256 KiB once runs of chunks move in one splice. Pipe pages count against a
# per-user budget (fs/pipe-user-pages-soft, 64 MiB by default) that every process of the
# sandbox uid shares; past it the kernel grants no bigger pipe and the relay makes do with
# the one it has (64 KiB, or 8 KiB if made past the budget): slower, still correct.
PIPE_SIZES = (1024 * 1024, 256 * 1024)
_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK if hasattr(os, "splice") else 0
# Rounds of the pump (each up to a pipe-full in and out) between turns of the event loop
# when neither side ever makes it wait.
YIELD_EVERY = 16
# Linux's value on the architectures the sidecar runs on; the probe checks it means
# "peek from this offset" before the relay relies on it.
SO_PEEK_OFF = getattr(socket, "SO_PEEK_OFF", 42)
# Enough for "\r\n" + any plain hex size + "\r\n"; longer lines get a second, larger peek.
_PEEK = 32
_HEXDIGITS = b"0123456789abcdefABCDEF"
_CRLF = b"\r\n"


class _Step(enum.Enum):
    PROGRESS = "progress"
    READ = "read"  # wait for the upstream
    DRAIN = "drain"  # wait for the client to take what is queued
    DONE = "done"


_available: bool | None = None
# Per address family: whether its sockets take SO_PEEK_OFF (absent: not tried yet).
# None means the probe found it unusable everywhere.
_peek_offset: dict[int, bool] | None = {}


def available() -> bool:
    """Whether splice works here (Linux, and not refused by a seccomp filter)."""
    global _available, _peek_offset
    if _available is None:
        _available = _probe()
        if not _peek_offset_works():  # pragma: no cover - an old kernel
            _peek_offset = None
    return _available


def _peek_offset_works() -> bool:
    """Whether ``SO_PEEK_OFF`` makes a peek start at that offset (on a Unix socket pair;
    an upstream of another family is tried when first used)."""
    try:
        left, right = socket.socketpair()
    except OSError:  # pragma: no cover - out of descriptors
        return False
    try:
        left.sendall(b"0123456789")
        right.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, 4)
        return right.recv(2, socket.MSG_PEEK) == b"45" and right.recv(3) == b"012"
    except OSError:  # pragma: no cover - an old kernel or another architecture
        return False
    finally:
        left.close()
        right.close()


def _probe() -> bool:
    if not hasattr(os, "splice"):  # pragma: no cover - not Linux
        return False
    try:
        left, right = socket.socketpair()
        read_end, write_end = os.pipe()
    except OSError:  # pragma: no cover - out of descriptors
        return False
    try:
        left.sendall(b"x")
        moved_in = os.splice(right.fileno(), write_end, 1)
        moved_out = os.splice(read_end, left.fileno(), 1)
        return moved_in == 1 and moved_out == 1 and right.recv(1) == b"x"
    except OSError:  # pragma: no cover - splice filtered out
        return False
    finally:
        for sock in (left, right):
            sock.close()
        for fd in (read_end, write_end):
            os.close(fd)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class SpliceRelay:
    """Moves one body; ``moved`` counts payload bytes (without chunk framing)."""

    def __init__(
        self,
        src: socket.socket,
        leftover: bytes,
        dst: socket.socket,
        framing: Framing,
        length: int,
        touch: Callable[[], None],
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._src, self._dst = src, dst
        self._src_fd, self._dst_fd = src.fileno(), dst.fileno()
        # Body bytes the upstream connection had read before it was handed over.
        self._left = bytearray(leftover)
        self._chunked = framing is Framing.CHUNKED
        self._raw = 0 if self._chunked else length  # bytes to pass on verbatim
        self._done = not self._chunked and length == 0
        self._crlf = False  # the next chunk header is preceded by the previous CRLF
        self._trailers = False
        self._partial = bytearray()  # consumed from the upstream, not yet understood
        # Bytes for the client written from Python; always ahead of what is in the pipe,
        # so they are only added while the pipe is empty.
        self._out = bytearray()
        self._in_pipe = 0
        # Whether the upstream socket can be peeked at an offset: chunk headers past the
        # one in hand can then be read ahead.
        self._family = src.family
        self._ahead = _peek_offset is not None and _peek_offset.get(src.family, True)
        self._inq = array("i", [0])
        self._resume = False
        self._cap = 0
        self._pipe_r = self._pipe_w = -1
        self._touch = touch
        self.moved = 0
        self._failed = False
        self._waiter: asyncio.Future[None] | None = None

    def fail(self) -> None:
        """The upstream connection was cut under us (e.g. the request body overflowed)."""
        self._failed = True
        if self._waiter is not None:
            _wake(self._waiter)

    async def run(self) -> None:
        self._pipe_r, self._pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            self._cap = _grow(self._pipe_w)
            await self._pump()
        finally:
            os.close(self._pipe_r)
            os.close(self._pipe_w)

    async def _pump(self) -> None:
        busy = 0
        while True:
            if self._failed:
                raise UpstreamError("upstream connection lost mid-body")
            # Fill the pipe with as many chunks as are there, then empty it towards the
            # client in one go: fewer syscalls per byte.
            step = _Step.DONE
            filled = False
            try:
                while not self._done and self._in_pipe < self._cap:
                    step = self._fill()
                    if step is not _Step.PROGRESS:
                        break
                    filled = True
            except UpstreamError:
                # Hand over what did arrive before the cut, as far as the client takes it now.
                with contextlib.suppress(OSError):
                    while self._flush():
                        pass
                raise
            flushed = self._flush()
            if self._done and not self._out and not self._in_pipe:
                return
            if filled or flushed:
                self._touch()
                busy += 1
                if busy >= YIELD_EVERY:
                    # Both sides keep up, so this loop never waits: let the other streams,
                    # timers and callbacks (a lost upstream) of the event loop have a turn.
                    busy = 0
                    await asyncio.sleep(0)
                continue
            busy = 0
            await self._wait(read=step is _Step.READ, write=bool(self._out or self._in_pipe))

    async def _wait(self, *, read: bool, write: bool) -> None:
        waiter = self._loop.create_future()
        self._waiter = waiter
        if read:
            self._loop.add_reader(self._src_fd, _wake, waiter)
        if write:
            self._loop.add_writer(self._dst_fd, _wake, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if read:
                self._loop.remove_reader(self._src_fd)
            if write:
                self._loop.remove_writer(self._dst_fd)

    # -- towards the client -----------------------------------------------------------

    def _flush(self) -> bool:
        """Push queued bytes to the client; True if any went. Raises ConnectionError
        when the client is gone."""
        if self._out:
            try:
                sent = self._dst.send(self._out)
            except BlockingIOError:
                return False
            del self._out[:sent]
            if self._out:
                return sent > 0
        if not self._in_pipe:
            return False
        try:
            sent = os.splice(self._pipe_r, self._dst_fd, self._in_pipe, flags=_FLAGS)
        except BlockingIOError:
            return False
        self._in_pipe -= sent
        return sent > 0

    # -- from the upstream ------------------------------------------------------------

    def _fill(self) -> _Step:
        if self._raw:
            if self._resume and self._raw < self._cap - self._in_pipe:
                self._read_ahead()
            return self._move()
        if not self._chunked:  # pragma: no cover - _move sets _done at the end
            self._done = True
            return _Step.PROGRESS
        if self._trailers:
            return self._skip_trailers()
        peek = self._peek(_PEEK)
        if peek is None:
            return _Step.READ
        if not self._partial:
            # The common case, kept short: "[CRLF]<hex>CRLF" whole in the peek; the
            # header and its data go on verbatim with one splice.
            start = 2 if self._crlf else 0
            end = peek.find(b"\r\n", start)
            line = peek[start:end]
            if (
                end > start
                and len(line) <= 15
                and not line.strip(_HEXDIGITS)
                and peek.startswith(_CRLF[:start])
                and (size := int(line, 16))
            ):
                self.moved += size
                self._crlf = True
                self._raw = end + 2 + size
                if self._ahead and not self._left:
                    self._read_ahead()
                return self._move()
        return self._chunk_header(peek)

    def _read_ahead(self) -> None:
        """Extend the verbatim run ``_raw`` over the canonical chunks that follow it and
        are already in the socket, peeking at each header past the data before it, up to
        a pipe-full. Where it stops for lack of bytes or of room, it goes on once the run
        has moved on (``_resume``); at anything else (another kind of header, the last
        chunk) the chunk-by-chunk path takes over."""
        self._resume = False
        # How much is there decides whether to peek at all: a peek that finds nothing
        # costs more than this question, and a stream that trickles in never has more
        # than the chunk in hand.
        try:
            fcntl.ioctl(self._src_fd, termios.FIONREAD, self._inq)
        except OSError:  # pragma: no cover - the chunk-by-chunk path reports it
            return
        there = min(self._inq[0], self._cap)
        if there <= self._raw:
            self._resume = True
            return
        sock = self._src
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, self._raw)
        except OSError:
            # Not on this family here (TCP before Linux 6.10): one chunk per splice.
            self._ahead = False
            assert _peek_offset is not None
            _peek_offset[self._family] = False
            return
        with contextlib.suppress(OSError):  # the chunk-by-chunk path reports it
            while True:
                peek = sock.recv(_PEEK, socket.MSG_PEEK)
                end = peek.find(b"\r\n", 2)
                line = peek[2:end]
                if not (
                    end > 2
                    and len(line) <= 15
                    and not line.strip(_HEXDIGITS)
                    and peek.startswith(_CRLF)
                    and (size := int(line, 16))
                ):
                    break
                # Counted once its header is on the way, as the chunk-by-chunk path does.
                self.moved += size
                self._raw += end + 2 + size
                if self._raw >= there:
                    self._resume = True
                    break
                sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, self._raw)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, -1)
        except OSError as exc:  # pragma: no cover - later peeks would read the wrong bytes
            raise UpstreamError("upstream socket refused a peek reset") from exc

    def _move(self) -> _Step:
        if self._left:
            moved = min(self._raw, len(self._left))
            self._out += self._left[:moved]
            del self._left[:moved]
        else:
            room = self._cap - self._in_pipe
            try:
                moved = os.splice(self._src_fd, self._pipe_w, min(self._raw, room), flags=_FLAGS)
            except BlockingIOError:
                # With data in the pipe this may mean "pipe full" rather than "nothing
                # to read"; waiting on the client then avoids spinning on a readable socket.
                return _Step.DRAIN if self._in_pipe else _Step.READ
            except ConnectionError as exc:
                raise UpstreamError("upstream connection reset mid-body") from exc
            if not moved:
                raise UpstreamError("upstream closed mid-body")
            self._in_pipe += moved
        self._raw -= moved
        if not self._chunked:
            self.moved += moved
            self._done = not self._raw
        return _Step.PROGRESS

    def _peek(self, size: int) -> bytes | None:
        if self._left:
            return bytes(self._left[:size])
        try:
            return self._src.recv(size, socket.MSG_PEEK)
        except BlockingIOError:
            return None
        except ConnectionError as exc:
            raise UpstreamError("upstream connection reset mid-body") from exc

    def _consume(self, size: int) -> None:
        """Drop ``size`` bytes that a peek has shown to be there."""
        from_left = min(size, len(self._left))
        del self._left[:from_left]
        size -= from_left
        while size:
            data = self._src.recv(size)
            if not data:  # pragma: no cover - peeked bytes vanished
                raise UpstreamError("upstream closed mid-body")
            size -= len(data)

    def _chunk_header(self, peek: bytes) -> _Step:
        """The general case of a chunk header: split, padded, with an extension, the
        last chunk, or not yet all there."""
        start = 2 if self._crlf else 0
        buf = self._partial + peek
        end = buf.find(b"\r\n", start)
        if end < 0 and len(peek) == _PEEK:
            peek = self._peek(LINE_LIMIT) or peek
            buf = self._partial + peek
            end = buf.find(b"\r\n", start)
        if self._crlf and len(buf) >= 2 and buf[:2] != b"\r\n":
            raise BadChunk("upstream chunk data not followed by CRLF")
        if end < 0:
            if not peek:
                raise UpstreamError("upstream closed mid-body")
            if len(buf) > LINE_LIMIT:
                raise BadChunk("upstream sent an over-long chunk header")
            if self._crlf and len(buf) >= 2 and not self._partial:
                # The chunk before is whole with its CRLF: pass that on now rather than
                # with the next header, which may be a long time coming.
                self._raw = 2
                self._crlf = False
                return _Step.PROGRESS
            # Take what is there, so the socket stops being readable until more comes.
            self._consume(len(peek))
            self._partial = buf
            return _Step.PROGRESS
        size, plain = chunk_size(bytes(buf[start:end]))
        if size and plain and not self._partial:
            self._raw = end + 2 + size  # [CRLF] size CRLF data, all verbatim
        else:
            if self._in_pipe:
                return _Step.DRAIN
            self._consume(end + 2 - len(self._partial))
            self._partial = bytearray()
            if self._crlf:
                self._out += b"\r\n"
            if size:
                self._out += b"%x\r\n" % size
                self._raw = size
            else:
                # The blank line may follow at once: treat the size line's CRLF as seen.
                self._trailers = True
                self._partial = bytearray(b"\r\n")
        self._crlf = True
        self.moved += size
        return _Step.PROGRESS

    def _skip_trailers(self) -> _Step:
        peek = self._peek(LINE_LIMIT)
        if peek is None:
            return _Step.READ
        if not peek:
            raise UpstreamError("upstream closed mid-body")
        buf = self._partial + peek
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > TRAILER_LIMIT:
                raise BadChunk("upstream sent too many trailers")
            self._consume(len(peek))
            self._partial = buf
            return _Step.PROGRESS
        self._consume(end + 4 - len(self._partial))
        self._partial = bytearray()
        self._trailers = False
        self._done = True
        return _Step.PROGRESS


def _grow(pipe_w: int) -> int:
    """Make the pipe as large as the kernel grants from ``PIPE_SIZES``; its capacity."""
    for size in PIPE_SIZES:
        try:
            return int(fcntl.fcntl(pipe_w, fcntl.F_SETPIPE_SZ, size))
        except OSError:  # over pipe-max-size or the per-user pipe budget
            continue
    return int(fcntl.fcntl(pipe_w, fcntl.F_GETPIPE_SZ))
