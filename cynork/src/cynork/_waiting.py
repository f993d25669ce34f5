"""Waiting for a task: a live status line on a terminal, plain lines otherwise.

The line lives on stderr so stdout carries only results. Ctrl-C ends the wait (not the
task) with exit 130 and says how to pick the result up later.
"""

from __future__ import annotations

import time
from typing import IO, Any

import click

from cynork._app import App
from cynork._client import TERMINAL_STATUSES, JSONDict
from cynork._errors import Interrupted

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
TICK = 0.1


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


def wait_for_result(app: App, task_id: str, *, interval: float = 1.0) -> JSONDict:
    """Polls the task's result until it is terminal and returns it."""
    client = app.client()
    live = app.stderr_is_tty() and app.output.color and not app.output.quiet
    progress = Progress(task_id, live=live, quiet=app.output.quiet)
    try:
        while True:
            result = client.task_result(task_id)
            if is_terminal(result):
                return result
            progress.update(str(result.get("status") or "queued"))
            sleep_ticking(app, interval, progress)
    except KeyboardInterrupt:
        raise interrupted(task_id) from None
    finally:
        progress.clear()
