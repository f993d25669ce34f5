"""Reading a request body without ever holding more than the cap."""

from __future__ import annotations

from starlette.types import Receive, Scope


class BodyTooLargeError(Exception):
    """The body is (or claims to be) over the cap: HTTP 413."""


class BadContentLengthError(Exception):
    """A Content-Length that is not a non-negative integer: HTTP 400."""


class ClientGoneError(Exception):
    """The client disconnected before the body was complete."""


def declared_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == b"content-length":
            text = value.decode("latin-1").strip()
            if not text.isdigit() or not text.isascii():
                raise BadContentLengthError
            return int(text)
    return None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole body, or BodyTooLargeError as soon as it would pass `limit` bytes.

    The declared length is checked first so an honest oversized upload is refused
    before any of it is read; a chunked body is counted while it arrives.
    """
    length = declared_length(scope)
    if length is not None and length > limit:
        raise BodyTooLargeError
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGoneError
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise BodyTooLargeError
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
