"""The `cynork` console script's start: what is imported when, and Ctrl-C meanwhile.

The start imports click and the cynork modules (`cynork.cli`); a command's own module
is imported when the command line names it (`cynork.commands.LazyGroup`), and the HTTP
client (`cynork._client`) when a command first talks to the gateway (`App.client`), so
help, --version, usage errors and shell completion never load it. Each of those loads
goes through `load`: a Ctrl-C during one ends the process at once with the same line
and exit code a later Ctrl-C gets, never a KeyboardInterrupt traceback from whatever
module was loading. This module imports only the standard library's signal handling,
so the console script reaches `main` within milliseconds of starting. Once loaded, the
usual handling (click, the shell, waiting) is back in place."""

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
    # Nothing has happened yet (these imports run before a command's first request or
    # write), so there is nothing to clean up, and unwinding a half-imported module
    # would only print a traceback, or worse: a SIGINT while `_ssl` imports `_socket`
    # comes out as an ImportError.
    os.write(2, b"cynork: interrupted\n")
    os._exit(EXIT_INTERRUPTED)


def load(*names: str) -> None:
    """Imports the modules `names` as a start should (the commands at start; the HTTP
    client when a command first talks to the gateway).

    SIGINT ends the process at once, with one line and exit 130, instead of landing in
    the middle of an import. And the garbage collector is held off: the imports make
    ~40 000 tracked objects (modules, classes, functions) that live as long as the
    process, with no garbage among them; with the collector on, each collection
    triggered while they are made walks all of those made so far, and Python's shutdown
    walks them again. Held off, then moved to the permanent generation (`gc.freeze`),
    they cost neither: about a fifth of a start's CPU time (docs/fast-path.md §7).
    Modules already loaded are not loaded again, and nothing is frozen again for them.
    """
    if all(name in sys.modules for name in names):
        return
    # Only where Python's own handler is in place: a SIGINT the parent set to ignored
    # (`cynork ... &` in a script) stays ignored.
    guarded = _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler
    if guarded:
        try:
            _signal.signal(_signal.SIGINT, _interrupted_while_starting)
        except ValueError:  # not the main thread, the only one that may set a handler
            guarded = False
    enabled = gc.isenabled()
    gc.disable()
    try:
        for name in names:
            __import__(name)
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
        if guarded:
            _signal.signal(_signal.SIGINT, _signal.default_int_handler)


def import_commands() -> Callable[[list[str]], int]:
    """`cynork.cli.main`, loaded as a start should (`load`)."""
    load("cynork.cli")
    from cynork.cli import main as run

    return run


def main() -> int:
    """Imports the commands (Ctrl-C meanwhile ends the process quietly), runs the
    command line."""
    return import_commands()(sys.argv[1:])
