"""The zero-copy relay on its own, between real socket pairs: how many splices a run of
chunks takes, the fallbacks (no ``SO_PEEK_OFF``, smaller pipes) and its turns with the
rest of the event loop."""

from __future__ import annotations

import asyncio
import os
import random
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from cynode.proxy import _splice
from cynode.proxy._upstream import Framing
from tests.proxy.conftest import eventually

PAYLOAD = random.Random(11).randbytes(768 * 1024)
CHUNK = 16 * 1024


def chunked(payload: bytes, size: int) -> bytes:
    """``payload`` in canonical chunks of ``size``, with the last chunk."""
    parts = [payload[at : at + size] for at in range(0, len(payload), size)]
    return b"".join(b"%x\r\n%b\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"


def pair(family: str) -> tuple[socket.socket, socket.socket]:
    """A connected pair whose first end can take all of PAYLOAD without a reader."""
    if family == "unix":
        ours, theirs = socket.socketpair()
    else:
        with socket.socket() as listener:
            # Before the handshake, so that the window it offers fits the whole body.
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            ours = socket.create_connection(listener.getsockname())
            theirs, _ = listener.accept()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    return ours, theirs


@dataclass
class Relayed:
    received: bytes
    moved: int
    splices_in: int
    turns: int  # of the event loop's other work while the relay ran


@pytest.fixture
def count_splices(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int], int]]:
    """Counts ``os.splice`` calls out of a given descriptor."""
    calls: list[int] = []
    real = os.splice

    def counting(src: int, dst: int, count: int, *args: object, **kwargs: object) -> int:
        calls.append(src)
        return real(src, dst, count, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "splice", counting)
    yield lambda fd: calls.count(fd)


async def relay_all(family: str, body: bytes, splices: Callable[[int], int]) -> Relayed:
    """Put the whole chunked ``body`` in the upstream socket first, then relay it while a
    ticker counts the turns the rest of the event loop gets."""
    up_out, up_in = pair(family)
    down_out, down_in = pair("unix")
    try:
        up_out.sendall(body)
        await eventually(lambda: len(up_in.recv(len(body), socket.MSG_PEEK)) == len(body))
        for sock in (up_in, down_out):
            sock.setblocking(False)
        relay = _splice.SpliceRelay(up_in, b"", down_out, Framing.CHUNKED, 0, lambda: None)
        received = bytearray()
        reader = asyncio.get_running_loop().sock_recv

        async def drain() -> None:
            down_in.setblocking(False)
            while chunk := await reader(down_in, 1 << 20):
                received.extend(chunk)

        turns = 0

        async def ticker() -> None:
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0)

        drained = asyncio.create_task(drain())
        ticking = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        started = turns
        try:
            await relay.run()
        finally:
            ticking.cancel()
        during = turns - started
        down_out.shutdown(socket.SHUT_WR)
        await asyncio.wait_for(drained, 10)
        return Relayed(bytes(received), relay.moved, splices(up_in.fileno()), during)
    finally:
        for sock in (up_out, up_in, down_out, down_in):
            sock.close()


def decoded(body: bytes) -> bytes:
    """The payload of a chunked body that ends without its last chunk (write_eof's)."""
    out, at = bytearray(), 0
    while at < len(body):
        end = body.index(b"\r\n", at)
        size = int(body[at:end], 16)
        out += body[end + 2 : end + 2 + size]
        at = end + 2 + size
        assert body[at : at + 2] == b"\r\n"
        at += 2
    return bytes(out)


@pytest.mark.parametrize("family", ["tcp", "unix"])
async def test_a_run_of_chunks_moves_in_few_splices(
    family: str, monkeypatch: pytest.MonkeyPatch, count_splices: Callable[[int], int]
) -> None:
    monkeypatch.setattr(_splice, "_peek_offset", {})
    assert _splice.available()
    result = await relay_all(family, chunked(PAYLOAD, CHUNK), count_splices)
    assert decoded(result.received) == PAYLOAD
    assert result.moved == len(PAYLOAD)
    # 48 chunks, all there before the relay starts: one pipe-full per splice (the first
    # chunk's header is peeked the ordinary way), not one splice per chunk.
    assert result.splices_in <= 3, result.splices_in


@pytest.mark.parametrize("family", ["tcp", "unix"])
async def test_without_peek_offsets_each_chunk_takes_a_splice(
    family: str, monkeypatch: pytest.MonkeyPatch, count_splices: Callable[[int], int]
) -> None:
    # An option number no kernel knows: setsockopt fails as on TCP before Linux 6.10.
    monkeypatch.setattr(_splice, "SO_PEEK_OFF", 0x7FFF)
    monkeypatch.setattr(_splice, "_peek_offset", {})
    result = await relay_all(family, chunked(PAYLOAD, CHUNK), count_splices)
    assert decoded(result.received) == PAYLOAD
    assert result.moved == len(PAYLOAD)
    assert result.splices_in == len(PAYLOAD) // CHUNK
    # Remembered for the family: the next relay does not ask again.
    family_id = socket.AF_UNIX if family == "unix" else socket.AF_INET
    assert _splice._peek_offset == {family_id: False}


async def test_peeking_ahead_stops_at_a_header_it_cannot_pass_verbatim(
    monkeypatch: pytest.MonkeyPatch, count_splices: Callable[[int], int]
) -> None:
    """A run ends at an extension; the chunk-by-chunk path rewrites that header and the
    next run starts after it."""
    monkeypatch.setattr(_splice, "_peek_offset", {})
    first, second = PAYLOAD[: 8 * CHUNK], PAYLOAD[8 * CHUNK :]
    body = chunked(first, CHUNK)[: -len(b"0\r\n\r\n")]
    body += b"%x;ext=1\r\n%b\r\n" % (CHUNK, second[:CHUNK]) + chunked(second[CHUNK:], CHUNK)
    result = await relay_all("unix", body, count_splices)
    assert decoded(result.received) == PAYLOAD
    assert b";ext" not in result.received
    assert result.splices_in <= 6, result.splices_in


@pytest.mark.parametrize(
    ("sizes", "capacity"),
    [((-1, 256 * 1024), 256 * 1024), ((-1,), 64 * 1024)],
    ids=["second-size", "default-pipe"],
)
async def test_a_refused_pipe_size_falls_back(
    sizes: tuple[int, ...],
    capacity: int,
    monkeypatch: pytest.MonkeyPatch,
    count_splices: Callable[[int], int],
) -> None:
    # -1 is no size at all (EINVAL), as a size over the budget is EPERM for the sidecar.
    monkeypatch.setattr(_splice, "PIPE_SIZES", sizes)
    read_end, write_end = os.pipe()
    try:
        assert _splice._grow(write_end) == capacity
    finally:
        os.close(read_end)
        os.close(write_end)
    result = await relay_all("unix", chunked(PAYLOAD, CHUNK), count_splices)
    assert decoded(result.received) == PAYLOAD
    # Runs of chunks still move a pipe-full at a time.
    assert result.splices_in <= len(PAYLOAD) // capacity + 2, result.splices_in


async def test_the_relay_takes_turns_with_the_event_loop(
    monkeypatch: pytest.MonkeyPatch, count_splices: Callable[[int], int]
) -> None:
    """With everything already in the upstream socket and room on the client side, the
    pump never has to wait; it still lets the loop run other work now and then."""
    monkeypatch.setattr(_splice, "PIPE_SIZES", (64 * 1024,))
    monkeypatch.setattr(_splice, "YIELD_EVERY", 2)
    result = await relay_all("unix", chunked(PAYLOAD, CHUNK), count_splices)
    assert decoded(result.received) == PAYLOAD
    # 12 pipe-fulls, a turn every second round of the pump.
    assert result.turns >= 5, result.turns
