from __future__ import annotations

import json
import socket
import struct

import pytest

from cynode.node.runtime.output import (
    END,
    STDERR,
    STDOUT,
    FrameDecoder,
    OutputCapture,
    RunnerEnd,
    RunnerStream,
    StreamCapture,
)
from cynode.node.runtime.output_hook import OutputAttach


def frame(stream_id: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream_id, len(payload)) + payload


def test_decoder_splits_streams() -> None:
    data = frame(1, b"out") + frame(2, b"err") + frame(1, b"more")
    assert FrameDecoder().feed(data) == [
        ("stdout", b"out"),
        ("stderr", b"err"),
        ("stdout", b"more"),
    ]


def test_decoder_reassembles_frames_split_anywhere() -> None:
    data = frame(1, b"hello") + frame(2, b"world")
    decoder = FrameDecoder()
    got = []
    for i in range(len(data)):
        got += decoder.feed(data[i : i + 1])
    assert got == [("stdout", b"hello"), ("stderr", b"world")]
    assert decoder.pending == 0


def test_decoder_keeps_incomplete_frame_and_skips_unknown_or_empty() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(frame(3, b"x") + frame(1, b"") + frame(1, b"abc")[:6]) == []
    assert decoder.pending == 6
    assert decoder.feed(frame(1, b"abc")[6:]) == [("stdout", b"abc")]


def test_capture_cuts_by_bytes_and_flags_truncation() -> None:
    capture = StreamCapture(10)
    first = capture.add(b"123456")
    second = capture.add(b"789012")
    assert first is not None and (first.data, first.offset) == (b"123456", 0)
    assert second is not None and (second.data, second.offset) == (b"7890", 6)
    assert capture.add(b"x") is None
    assert capture.data == b"1234567890"
    assert capture.total == 13
    assert capture.truncated


def test_capture_exactly_at_limit_is_not_truncated() -> None:
    capture = StreamCapture(4)
    capture.add(b"abcd")
    assert capture.add(b"") is None
    assert capture.data == b"abcd" and not capture.truncated


def test_output_capture_keeps_streams_apart() -> None:
    out = OutputCapture(3)
    out.add("stdout", b"aaaa")
    out.add("stderr", b"b")
    assert (out.stdout.data, out.stdout.truncated) == (b"aaa", True)
    assert (out.stderr.data, out.stderr.truncated) == (b"b", False)


def test_follower_pump_forwards_only_kept_bytes_with_offsets() -> None:
    capture = OutputCapture(5)
    emitted: list[tuple[str, bytes, int]] = []
    follower = OutputAttach(
        client=None,  # type: ignore[arg-type]  # pump() never touches the client
        container_id="c",
        capture=capture,
        emit=lambda s, d, o: emitted.append((s, d, o)),
    )
    data = frame(1, b"abc") + frame(2, b"E") + frame(1, b"defg") + frame(1, b"h")
    follower.pump([data[:5], data[5:]])
    assert emitted == [("stdout", b"abc", 0), ("stderr", b"E", 0), ("stdout", b"de", 3)]
    assert capture.stdout.total == 8 and capture.stdout.truncated


# -- a warm sandbox runner's frames (images/sandbox/cynode_warm.py) -------------------------


def end(nonce: str = "n0nce", **fields: object) -> bytes:
    body = {"nonce": nonce, "exit_code": 3, "oom": False, "out_empty": True, **fields}
    return frame(3, json.dumps(body).encode())


def test_a_runner_stream_after_its_hello_is_framed() -> None:
    stream = RunnerStream("n0nce")
    data = frame(4, b"n0nce") + frame(1, b"out") + frame(2, b"err") + end()
    got: list[tuple[str, bytes]] = []
    for i in range(len(data)):  # split anywhere, the hello too
        got += stream.feed(data[i : i + 1])
    assert stream.framed is True
    assert got[:2] == [(STDOUT, b"out"), (STDERR, b"err")]
    assert got[2][0] == END
    assert RunnerEnd.parse(got[2][1], "n0nce") == RunnerEnd(3, False, True)
    assert stream.flush() == []


def test_a_runner_that_does_not_frame_is_passed_on_raw() -> None:
    # An image older than the node: the job writes to stdout itself.
    stream = RunnerStream("n0nce")
    hello_start = frame(4, b"n0nce")[:10]
    assert stream.feed(hello_start) == []  # a prefix of the hello: held
    assert stream.feed(b"X then the rest") == [(STDOUT, hello_start + b"X then the rest")]
    assert stream.framed is False
    assert stream.feed(end()) == [(STDOUT, end())]  # no end is ever read from raw bytes
    short = RunnerStream("n0nce")
    assert short.feed(b"\x04\x00") == []
    assert short.flush() == [(STDOUT, b"\x04\x00")]
    other = RunnerStream("n0nce")
    assert other.feed(frame(4, b"guess")) == [(STDOUT, frame(4, b"guess"))]


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[1]",
        json.dumps({"exit_code": 0}).encode(),
        json.dumps({"nonce": "forged", "exit_code": 0, "oom": False}).encode(),
        json.dumps({"nonce": "n0nce", "exit_code": "0", "oom": False}).encode(),
        json.dumps({"nonce": "n0nce", "exit_code": True, "oom": False}).encode(),
        json.dumps({"nonce": "n0nce", "exit_code": 0, "oom": "no"}).encode(),
    ],
)
def test_an_end_without_the_nonce_or_well_formed_fields_is_refused(payload: bytes) -> None:
    assert RunnerEnd.parse(payload, "n0nce") is None


def test_an_end_of_unknown_oom_and_odd_out_flag() -> None:
    body = {"nonce": "n0nce", "exit_code": 137, "oom": None, "out_empty": "yes"}
    assert RunnerEnd.parse(json.dumps(body).encode(), "n0nce") == RunnerEnd(137, None, False)


def test_the_attach_pump_takes_the_runners_frames_and_reports_the_end() -> None:
    capture = OutputCapture(100)
    emitted: list[tuple[str, bytes, int]] = []
    ends: list[RunnerEnd] = []
    attach = OutputAttach(client=None, container_id="c")  # type: ignore[arg-type]
    attach.bind(
        capture, lambda s, d, o: emitted.append((s, d, o)), RunnerStream("n0nce"), ends.append
    )
    inner = frame(4, b"n0nce") + frame(1, b"out") + frame(2, b"err") + end("forged") + end()
    # The runner's frames ride in Podman's stdout frames; its own stderr is passed on.
    data = frame(1, inner[:7]) + frame(1, inner[7:]) + frame(2, b"runner's own\n")
    attach.pump([data])
    assert emitted == [
        ("stdout", b"out", 0),
        ("stderr", b"err", 0),
        ("stderr", b"runner's own\n", 3),
    ]
    assert ends == [RunnerEnd(3, False, True)]  # the forged one is dropped


def test_an_attach_is_quiet_only_while_open_and_silent() -> None:
    attach = OutputAttach(client=None, container_id="c")  # type: ignore[arg-type]
    assert not attach.quiet()  # never opened
    ours, theirs = socket.socketpair()
    try:
        attach._socket, attach._response = ours, object()  # as open() leaves them
        assert attach.quiet()
        theirs.sendall(b"x")
        assert not attach.quiet()
    finally:
        ours.close()
        theirs.close()
    assert not attach.quiet()  # a closed socket
