"""Waiting for a task: a live status line on a terminal, plain lines otherwise.

The wait follows the gateway's watch stream (GET /v1/tasks/{id}/watch), which the
gateway wakes the moment the task changes, and asks for the result on the terminal
event (`include_result`): no polling and no second call, so a task that ends in 50 ms
is printed in about 50 ms. A gateway too old to send it is asked with GET …/result.

The line lives on stderr so stdout carries only results. Ctrl-C ends the wait (not the
task) with exit 130 and says how to pick the result up later.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

import click

from cynork._api import TERMINAL_STATUSES, JSONDict
from cynork._app import App
from cynork._errors import Interrupted

if TYPE_CHECKING:
    from cynork._client import GatewayClient

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
TICK = 0.1
# A watch stream that ends without its terminal event (the gateway restarted, a proxy
# cut it) is opened again after this pause.
REOPEN_SECONDS = 1.0


class Progress:
    """A spinner line redrawn in place (terminal), or one line per status change."""

    def __init__(
        self, task_id: str, *, live: bool, stream: IO[str] | None = None, quiet: bool = False
    ) -> None:
        self.task_id = task_id
        self.live = live
        self.quiet = quiet
        self.stream = stream
        self.status = ""
        self._frame = 0
        self._started = time.monotonic()
        self._drawn = False

    def update(self, status: str) -> None:
        changed = status != self.status
        self.status = status
        if self.live:
            self.tick()
        elif changed and not self.quiet:
            click.echo(f"task {self.task_id}: {status}", err=True, file=self.stream)

    def tick(self) -> None:
        if not self.live:
            return
        frame = SPINNER[self._frame % len(SPINNER)]
        self._frame += 1
        elapsed = int(time.monotonic() - self._started)
        line = f"\r\x1b[K{frame} task {self.task_id}: {self.status or 'waiting'} ({elapsed}s)"
        click.echo(line, nl=False, err=True, file=self.stream, color=True)
        self._drawn = True

    def clear(self) -> None:
        if self._drawn:
            click.echo("\r\x1b[K", nl=False, err=True, file=self.stream, color=True)
            self._drawn = False


def interrupted(task_id: str) -> Interrupted:
    return Interrupted(
        f"interrupted; task {task_id} keeps running (`cynork task result {task_id}` shows it later)"
    )


def sleep_ticking(app: App, seconds: float, progress: Progress) -> None:
    """Sleeps in short steps so the spinner keeps turning on a terminal."""
    if not progress.live:
        app.sleep(seconds)
        return
    remaining = seconds
    while remaining > 0:
        step = min(TICK, remaining)
        app.sleep(step)
        remaining -= step
        progress.tick()


def is_terminal(obj: dict[str, Any]) -> bool:
    return obj.get("status") in TERMINAL_STATUSES


def _events_ticking(client: GatewayClient, task_id: str, progress: Progress) -> Iterator[JSONDict]:
    """The watch stream's events, read on a thread so the spinner keeps turning while
    the stream is quiet (a terminal only: without one the wait reads on this thread,
    so `task create --result` in a script does not import queue, ~0.5 ms)."""
    import queue
    import threading

    events: queue.Queue[JSONDict | BaseException | None] = queue.Queue()

    def read() -> None:
        try:
            for event in client.watch_task(task_id, include_result=True):
                events.put(event)
            events.put(None)
        except BaseException as exc:  # handed to the waiting thread, raised there
            events.put(exc)

    threading.Thread(target=read, name="cynork-watch", daemon=True).start()
    while True:
        try:
            item = events.get(timeout=TICK)
        except queue.Empty:
            progress.tick()
            continue
        if item is None:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def _follow(client: GatewayClient, task_id: str, progress: Progress) -> JSONDict | None:
    """Follows one watch stream; its terminal event, or None if it ended without one."""
    events = (
        _events_ticking(client, task_id, progress)
        if progress.live
        else client.watch_task(task_id, include_result=True)
    )
    for event in events:
        progress.update(str(event.get("status") or "queued"))
        if event.get("terminal"):
            return event
    return None


def wait_for_result(app: App, task_id: str) -> JSONDict:
    """Follows the task's watch stream until it is terminal, then returns its result."""
    client = app.client()
    live = app.stderr_is_tty() and app.output.color and not app.output.quiet
    progress = Progress(task_id, live=live, quiet=app.output.quiet)
    try:
        while (terminal := _follow(client, task_id, progress)) is None:
            sleep_ticking(app, REOPEN_SECONDS, progress)
        result = terminal.get("task_result")
        if isinstance(result, dict) and result.get("task_id"):
            return result
        return client.task_result(task_id)
    except KeyboardInterrupt:
        raise interrupted(task_id) from None
    finally:
        progress.clear()
