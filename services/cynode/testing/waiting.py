"""Waiting for a condition: polls with a deadline, sync and async, and the HTTP probes
readiness checks are made of. A wait fails with NotReady (time is up) or ProcessExited
(a process it watched died first), each saying what it waited for."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

import httpx

What = str | Callable[[], str]


class NotReady(TimeoutError):
    """The condition did not hold within the time allowed."""


class ProcessExited(RuntimeError):
    """A process the wait depended on exited before the condition held."""


class Watched(Protocol):
    """What a wait needs of a process: whether it lives, and its log for the message."""

    name: str

    def alive(self) -> bool: ...

    def tail(self, lines: int = 40) -> str: ...


def _say(what: What) -> str:
    return what() if callable(what) else what


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: What = "the condition",
    *,
    procs: Iterable[Watched] = (),
    interval: float = 0.2,
) -> None:
    """Polls `check` until it holds; fails early when one of `procs` exits, and with
    the tail of the first one's log when time is up."""
    watched = list(procs)
    deadline = time.monotonic() + timeout
    while True:
        for proc in watched:
            if not proc.alive():
                raise ProcessExited(
                    f"{proc.name} exited while waiting for {_say(what)}:\n{proc.tail()}"
                )
        if check():
            return
        if time.monotonic() > deadline:
            log = f":\n{watched[0].tail()}" if watched else ""
            raise NotReady(f"{_say(what)} not reached within {timeout:.0f}s{log}")
        time.sleep(interval)


async def until(
    check: Callable[[], Awaitable[bool] | bool],
    timeout: float = 20.0,  # noqa: ASYNC109  (a deadline for polling, not for one await)
    what: What = "the condition",
    interval: float = 0.05,
) -> None:
    """The async form, for state in the test's own event loop; `check` may be a
    coroutine function."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return
        if loop.time() > deadline:
            raise NotReady(f"{_say(what)} not reached within {timeout:g}s")
        await asyncio.sleep(interval)


def http_status(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """(status, body) of a GET; (0, the error) when nothing answers."""
    try:
        resp = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        return 0, str(exc)
    return resp.status_code, resp.text.strip()


def http_ok(url: str, timeout: float = 2.0) -> bool:
    return http_status(url, timeout)[0] == 200
