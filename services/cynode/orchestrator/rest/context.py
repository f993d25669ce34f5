"""An in-process stand-in for grpc.aio.ServicerContext, so one servicer object serves
both the gRPC port and the REST shim without knowing which one called it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NoReturn

import grpc
import grpc.aio

_log = logging.getLogger(__name__)

MetadataValue = str | bytes
MetadataPairs = tuple[tuple[str, MetadataValue], ...]


class RestAbortError(grpc.aio.AbortError):
    """Raised by RestServicerContext.abort; a grpc.aio.AbortError like the real one."""


def format_peer(client: tuple[str, int] | None) -> str:
    """A peer string in gRPC's format: ipv4:1.2.3.4:5 or ipv6:[::1]:5."""
    if client is None:
        return "unknown"
    host, port = client
    if ":" in host:
        return f"ipv6:[{host}]:{port}"
    return f"ipv4:{host}:{port}"


class RestServicerContext(grpc.aio.ServicerContext[Any, Any]):
    """The part of the servicer context our servicers use, fed from an HTTP request.

    `invocation_metadata()` holds the request headers, lower-cased, as gRPC does.
    Trailing metadata is read back by the shim: `x-http-status` picks the HTTP
    status, `retry-after` becomes a header.
    """

    def __init__(
        self,
        metadata: Iterable[tuple[str, str]] = (),
        *,
        peer: str = "unknown",
    ) -> None:
        self._metadata: tuple[tuple[str, str], ...] = tuple(
            (key.lower(), value) for key, value in metadata
        )
        self._peer = peer
        self._code: grpc.StatusCode | None = None
        self._details: str | None = None
        self._trailing: MetadataPairs = ()
        self._initial: MetadataPairs = ()
        self._cancelled = False
        self._done = False
        self._done_callbacks: list[Callable[[Any], None]] = []

    # -- status -----------------------------------------------------------------

    async def abort(  # type: ignore[override]
        self,
        code: grpc.StatusCode,
        details: str = "",
        trailing_metadata: Sequence[tuple[str, MetadataValue]] = (),
    ) -> NoReturn:
        if trailing_metadata:
            self.set_trailing_metadata(trailing_metadata)
        if code == grpc.StatusCode.OK:
            # grpc.aio refuses to abort with OK and reports UNKNOWN instead.
            code = grpc.StatusCode.UNKNOWN
        self._code = code
        self._details = details
        raise RestAbortError(details)

    async def abort_with_status(self, status: Any) -> NoReturn:
        await self.abort(status.code, status.details, status.trailing_metadata)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode | None:  # type: ignore[override]
        return self._code

    def details(self) -> str | None:  # type: ignore[override]
        return self._details

    # -- metadata ---------------------------------------------------------------

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:  # type: ignore[override]
        return self._metadata

    def set_trailing_metadata(  # type: ignore[override]
        self, trailing_metadata: Sequence[tuple[str, MetadataValue]]
    ) -> None:
        self._trailing = tuple((key.lower(), value) for key, value in trailing_metadata)

    def trailing_metadata(self) -> MetadataPairs:  # type: ignore[override]
        return self._trailing

    async def send_initial_metadata(  # type: ignore[override]
        self, initial_metadata: Sequence[tuple[str, MetadataValue]]
    ) -> None:
        # Nothing to send ahead on HTTP/1.1; kept so servicers may call it.
        self._initial = tuple(initial_metadata)

    def trailing_value(self, key: str) -> str | None:
        """The last trailing-metadata value under `key`, as text."""
        found: str | None = None
        for name, value in self._trailing:
            if name == key:
                found = value.decode("latin-1") if isinstance(value, bytes) else value
        return found

    # -- the call ---------------------------------------------------------------

    def peer(self) -> str:
        return self._peer

    def peer_identities(self) -> Iterable[bytes] | None:
        return None

    def peer_identity_key(self) -> str | None:
        return None

    def auth_context(self) -> Mapping[str, Iterable[bytes]]:
        return {}

    def time_remaining(self) -> float | None:  # type: ignore[override]
        return None

    def cancelled(self) -> bool:
        return self._cancelled

    def done(self) -> bool:
        return self._done

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:  # type: ignore[override]
        if self._done:
            callback(self)
        else:
            self._done_callbacks.append(callback)

    def set_compression(self, compression: grpc.Compression) -> None:
        """HTTP compression is the server's business, not the servicer's."""

    def disable_next_message_compression(self) -> None:
        """See set_compression."""

    async def read(self) -> NoReturn:
        raise grpc.aio.UsageError("REST calls have no request stream")

    async def write(self, message: Any) -> NoReturn:
        raise grpc.aio.UsageError("the REST shim takes server streams as async generators")

    # -- used by the shim ---------------------------------------------------------

    def mark_cancelled(self) -> None:
        self._cancelled = True

    def mark_done(self) -> None:
        if self._done:
            return
        self._done = True
        callbacks, self._done_callbacks = self._done_callbacks, []
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                _log.exception("done callback failed")
