"""cynork: the CyNode command-line client.

The public surface is small: `main` (the console script), `GatewayClient` (the REST
client the commands use, usable on its own), and the error types with their exit codes.

Those names load on first use (PEP 562): importing the package itself stays cheap, so
the console script (`cynork._entry`) can install its Ctrl-C handling before the HTTP
client and click are imported.
"""

from __future__ import annotations

import importlib

# Not `from typing import TYPE_CHECKING`: typing costs ~10 ms at start-up, inside the
# window this package keeps small. Type checkers treat any TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from cynork._api import TERMINAL_STATUSES
    from cynork._client import GatewayClient
    from cynork._errors import (
        AuthError,
        ConflictError,
        CynorkError,
        GatewayError,
        InternalError,
        Interrupted,
        NotFoundError,
        ServerError,
        UsageError,
        ValidationError,
    )

__version__ = "0.1.0"

_LAZY = {
    "TERMINAL_STATUSES": "cynork._api",
    "GatewayClient": "cynork._client",
    "AuthError": "cynork._errors",
    "ConflictError": "cynork._errors",
    "CynorkError": "cynork._errors",
    "GatewayError": "cynork._errors",
    "InternalError": "cynork._errors",
    "Interrupted": "cynork._errors",
    "NotFoundError": "cynork._errors",
    "ServerError": "cynork._errors",
    "UsageError": "cynork._errors",
    "ValidationError": "cynork._errors",
}

__all__ = [
    "TERMINAL_STATUSES",
    "AuthError",
    "ConflictError",
    "CynorkError",
    "GatewayClient",
    "GatewayError",
    "InternalError",
    "Interrupted",
    "NotFoundError",
    "ServerError",
    "UsageError",
    "ValidationError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cynork' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
