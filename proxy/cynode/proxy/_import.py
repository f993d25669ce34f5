"""aiohttp's server, imported without aiohttp's client (the sidecar's start).

The proxy uses aiohttp for its server side alone (`_upstream` is its own client), but
`import aiohttp` runs the package's `__init__`, which imports the whole client
(`aiohttp.client`, `connector`, `cookiejar`, `tracing`, `formdata`, `multipart`'s
client half, `charset_normalizer`, ...): about a fifth of what importing the server
costs in the sidecar image. A job's first request waits for that import (SPEC §4.6,
docs/fast-path.md §5). So the sidecar's entry point (cli.py) registers the `aiohttp`
package without running its `__init__` and imports `aiohttp.web` through it: the
modules loaded are aiohttp's own, unchanged, only the client ones are never loaded.

Only the sidecar's process does this, and only while nothing has imported aiohttp yet:
in any other process (the node's relay, tests) `aiohttp` stays the full package. If the
server cannot be imported this way (an aiohttp whose server needs its `__init__`), every
aiohttp module loaded so far is dropped and the full package is imported as before.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from pathlib import Path

_VERSION = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.MULTILINE)


def _drop_aiohttp() -> None:
    for name in [n for n in sys.modules if n == "aiohttp" or n.startswith("aiohttp.")]:
        del sys.modules[name]


def import_server_only() -> bool:
    """Imports `aiohttp.web`; True when it came without the package's `__init__`."""
    if "aiohttp" in sys.modules:
        return False
    spec = importlib.util.find_spec("aiohttp")
    if spec is None or spec.origin is None or spec.submodule_search_locations is None:
        importlib.import_module("aiohttp.web")  # fails as it always did
        return False
    try:
        found = _VERSION.search(Path(spec.origin).read_text(encoding="utf-8"))
        package = importlib.util.module_from_spec(spec)
        if found is not None:
            # The one name of the package's own that its server modules import
            # (`aiohttp.http`: `from . import __version__`, for the Server header).
            package.__version__ = found.group(1)  # type: ignore[attr-defined]
        sys.modules["aiohttp"] = package
        importlib.import_module("aiohttp.web")
    except Exception:
        _drop_aiohttp()
        importlib.import_module("aiohttp.web")
        return False
    return True
