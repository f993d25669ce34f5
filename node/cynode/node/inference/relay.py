"""The node's inference relay: a UDS the pods' sidecars forward to, relayed to Ollama.

It is the same guarded proxy as the sidecar (cynode.proxy), run in the node process,
listening on a Unix socket in a directory of its own. That directory is bind-mounted
into every inference pod's sidecar (and only there), so the directory is 0711 and the
socket 0666: the sidecar's uid 10000 must connect, and nothing else is in it. The
node's inference link, in the same process, calls it without the socket (`call`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

from cynode.proxy import (
    Answer,
    ProxyConfig,
    RunningProxy,
    parse_listen,
    parse_upstream,
    start_proxy,
)

from ..state import socket_dir

log = logging.getLogger(__name__)

RELAY_SOCKET_NAME = "relay.sock"
RELAY_DIR_MODE = 0o711
# The relay must not give up before the sidecar does, or the sandbox would see a 504
# from the wrong hop; it only bounds what a sidecar that went away leaves behind.
RELAY_TIMEOUT_MARGIN_S = 30.0


def relay_dir(state_dir: Path) -> Path:
    """<state_dir>/inference, or a short temporary directory when that path is too long."""
    return socket_dir(state_dir / "inference", RELAY_SOCKET_NAME, "cynode-relay-")


class InferenceRelay:
    """start() binds <directory>/relay.sock forwarding to `upstream`; close() removes it."""

    def __init__(
        self,
        directory: Path,
        upstream: str,
        *,
        timeout_s: float = 120.0 + RELAY_TIMEOUT_MARGIN_S,
        max_body_bytes: int = 10 * 1024 * 1024,
    ) -> None:
        self.directory = directory
        self.upstream = upstream
        self.timeout_s = timeout_s
        self.max_body_bytes = max_body_bytes
        self._proxy: RunningProxy | None = None

    @property
    def socket_path(self) -> Path:
        return self.directory / RELAY_SOCKET_NAME

    @property
    def running(self) -> bool:
        return self._proxy is not None

    async def start(self) -> Path:
        if self._proxy is not None:
            return self.socket_path
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(RELAY_DIR_MODE)
        # A socket left by a node that was killed would make the bind fail.
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        config = ProxyConfig(
            upstream=parse_upstream(self.upstream),
            listen=(parse_listen(f"unix:{self.socket_path}"),),
            max_body_bytes=self.max_body_bytes,
            timeout=self.timeout_s,
            unix_socket_mode=0o666,
        )
        self._proxy = await start_proxy(config)
        log.info("inference relay on %s -> %s", self.socket_path, self.upstream)
        return self.socket_path

    def call(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Iterable[tuple[str, str]] = (),
        *,
        head_timeout: float | None = None,
    ) -> AbstractAsyncContextManager[Answer]:
        """A request through the relay's policy from the node's own process (its
        inference link, SPEC §7.12): the same guards and upstream connections as a
        sidecar's request, without the hop through the socket."""
        if self._proxy is None:
            raise RuntimeError("the inference relay is not running")
        return self._proxy.call(method, path, body, headers, head_timeout=head_timeout)

    async def close(self) -> None:
        proxy, self._proxy = self._proxy, None
        if proxy is not None:
            await proxy.close()
