"""RestServicerContext: the grpc.aio servicer-context subset, in process."""

from __future__ import annotations

from typing import Any

import grpc
import grpc.aio
import pytest

from cynode.orchestrator.rest import RestAbortError, RestServicerContext
from cynode.orchestrator.rest.context import format_peer


async def test_abort_raises_a_grpc_abort_error_and_records_status() -> None:
    context = RestServicerContext([("Authorization", "Bearer t")], peer="ipv4:1.2.3.4:5")
    with pytest.raises(grpc.aio.AbortError) as caught:
        await context.abort(grpc.StatusCode.NOT_FOUND, "gone", (("X-Http-Status", "410"),))
    assert isinstance(caught.value, RestAbortError)
    assert context.code() == grpc.StatusCode.NOT_FOUND
    assert context.details() == "gone"
    assert context.trailing_metadata() == (("x-http-status", "410"),)
    assert context.trailing_value("x-http-status") == "410"
    assert context.invocation_metadata() == (("authorization", "Bearer t"),)
    assert context.peer() == "ipv4:1.2.3.4:5"


async def test_abort_with_ok_becomes_unknown() -> None:
    context = RestServicerContext()
    with pytest.raises(RestAbortError):
        await context.abort(grpc.StatusCode.OK)
    assert context.code() == grpc.StatusCode.UNKNOWN


async def test_abort_with_status() -> None:
    class Status:
        code = grpc.StatusCode.ABORTED
        details = "conflict"
        trailing_metadata = (("retry-after", b"3"),)

    context = RestServicerContext()
    with pytest.raises(RestAbortError):
        await context.abort_with_status(Status())
    assert context.code() == grpc.StatusCode.ABORTED
    assert context.trailing_value("retry-after") == "3"


async def test_the_rest_of_the_surface() -> None:
    context = RestServicerContext()
    assert context.code() is None and context.details() is None
    context.set_code(grpc.StatusCode.INTERNAL)
    context.set_details("d")
    assert (context.code(), context.details()) == (grpc.StatusCode.INTERNAL, "d")
    await context.send_initial_metadata((("a", "b"),))
    context.set_compression(grpc.Compression.Gzip)
    context.disable_next_message_compression()
    assert context.peer() == "unknown"
    assert context.peer_identities() is None
    assert context.peer_identity_key() is None
    assert context.auth_context() == {}
    assert context.time_remaining() is None
    assert context.trailing_value("nope") is None
    with pytest.raises(grpc.aio.UsageError):
        await context.read()
    with pytest.raises(grpc.aio.UsageError):
        await context.write(object())


def test_done_and_cancelled_and_callbacks() -> None:
    context = RestServicerContext()
    seen: list[Any] = []

    def broken(_: Any) -> None:
        raise RuntimeError("callback bug")

    context.add_done_callback(seen.append)
    context.add_done_callback(broken)
    assert not context.done() and not context.cancelled()
    context.mark_cancelled()
    context.mark_done()
    context.mark_done()
    assert context.done() and context.cancelled()
    assert seen == [context]
    context.add_done_callback(seen.append)
    assert seen == [context, context]


def test_peer_formats() -> None:
    assert format_peer(("10.0.0.1", 80)) == "ipv4:10.0.0.1:80"
    assert format_peer(("::1", 443)) == "ipv6:[::1]:443"
    assert format_peer(None) == "unknown"
