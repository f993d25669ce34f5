from __future__ import annotations

import struct

from cynode.node.runtime.output import FrameDecoder, OutputCapture, StreamCapture
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
