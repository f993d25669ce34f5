"""The `cynork` console script: Ctrl-C while Python is still importing exits quietly.

`cynork.cli` pulls in click, httpx and prompt-toolkit, about 0.3 s on a cold start. A
Ctrl-C in that window used to end in a KeyboardInterrupt traceback from whatever module
was loading. This module imports only the standard library's signal handling, so the
console script reaches `main` within milliseconds of starting; from there until the
commands are imported, SIGINT ends the process at once with the same line and exit code
a later Ctrl-C gets. Once imported, the usual handling (click, the shell, waiting) is
back in place.
"""

from __future__ import annotations

# `_signal` is the builtin half of `signal`, already loaded: `signal` wraps it in enums,
# and importing enum would itself take a few ms of the window this module closes.
import _signal  # type: ignore[import-not-found]  # (typeshed has no stub for it)
import gc
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType

# cynork._errors.EXIT_INTERRUPTED (128 + SIGINT), not imported: it imports click.
EXIT_INTERRUPTED = 130


def _interrupted_while_starting(_signum: int, _frame: FrameType | None) -> None:
    # Nothing has happened yet (no request sent, no file written), so there is nothing to
    # clean up, and unwinding a half-imported module would only print a traceback.
    os.write(2, b"cynork: interrupted\n")
    os._exit(EXIT_INTERRUPTED)


def skip_unused_imports() -> None:
    """httpx imports its own command line (`httpx._main`) whenever click is installed,
    and with it rich and pygments: about 0.2 s of every cynork start for code cynork
    never runs. Marking the module absent makes httpx fall back to its stub `main`."""
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


def import_commands() -> Callable[[list[str]], int]:
    """`cynork.cli.main`, imported with the garbage collector held off.

    The imports make ~40 000 tracked objects that live as long as the process (modules,
    classes, functions); no cycle among them is garbage. With the collector on, each
    collection triggered while they are made walks all of those made so far, and
    Python's shutdown walks them again. Holding collection off while they are made,
    then moving them to the permanent generation (`gc.freeze`), skips that work: about
    a fifth of a start's CPU time (docs/fast-path.md §7). Collection is back on for
    what the command itself makes.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        from cynork.cli import main as run
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
    return run


def main() -> int:
    """Installs the start-up handler, imports the commands, runs the command line."""
    skip_unused_imports()
    # Only where Python's own handler is in place: a SIGINT the parent set to ignored
    # (`cynork ... &` in a script) stays ignored.
    guarded = _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler
    if guarded:
        _signal.signal(_signal.SIGINT, _interrupted_while_starting)
    try:
        run = import_commands()
    finally:
        if guarded:
            _signal.signal(_signal.SIGINT, _signal.default_int_handler)
    return run(sys.argv[1:])
