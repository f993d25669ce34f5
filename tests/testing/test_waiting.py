"""cynode.testing.waiting: deadlines, early failure when a process dies, HTTP probes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cynode.testing.ports import free_port
from cynode.testing.waiting import (
    NotReady,
    ProcessExited,
    http_ok,
    http_status,
    until,
    wait_until,
)


class FakeProc:
    def __init__(self, alive: bool) -> None:
        self.name = "fake"
        self._alive = alive

    def alive(self) -> bool:
        return self._alive

    def tail(self, lines: int = 40) -> str:
        return "last words"


def test_wait_until_returns_once_the_check_holds() -> None:
    calls = iter([False, False, True])
    wait_until(lambda: next(calls), 5, procs=[FakeProc(True)], interval=0.01)


def test_wait_until_says_what_was_not_reached_with_the_log() -> None:
    with pytest.raises(NotReady, match=r"the thing not reached within 0s:\nlast words"):
        wait_until(lambda: False, 0.05, "the thing", procs=[FakeProc(True)], interval=0.01)
    with pytest.raises(TimeoutError, match=r"^late not reached"):
        wait_until(lambda: False, 0.05, lambda: "late", interval=0.01)


def test_wait_until_fails_at_once_when_a_process_died() -> None:
    with pytest.raises(ProcessExited, match="fake exited while waiting for x:\nlast words"):
        wait_until(lambda: True, 60, "x", procs=[FakeProc(False)])


async def test_until_takes_plain_and_async_checks() -> None:
    calls = iter([False, True])
    await until(lambda: next(calls), 5)

    async def check() -> bool:
        return True

    await until(check, 5)
    with pytest.raises(NotReady, match=r"never not reached within 0\.05s"):
        await until(lambda: False, 0.05, "never")


@pytest.fixture
def server() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = 200 if self.path == "/ok" else 503
            self.send_response(status)
            self.end_headers()
            self.wfile.write(b" body\n")

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_http_probes(server: str) -> None:
    assert http_status(f"{server}/ok") == (200, "body")
    assert http_ok(f"{server}/ok")
    assert http_status(f"{server}/no")[0] == 503
    assert not http_ok(f"{server}/no")
    status, error = http_status(f"http://127.0.0.1:{free_port()}/", timeout=0.5)
    assert status == 0 and error
