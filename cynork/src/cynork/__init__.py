"""cynork: the CyNode command-line client.

The public surface is small: `main` (the console script), `GatewayClient` (the REST
client the commands use, usable on its own), and the error types with their exit codes.
"""

from cynork._client import TERMINAL_STATUSES, GatewayClient
from cynork._errors import (
    AuthError,
    CynorkError,
    Interrupted,
    NotFoundError,
    ServerError,
    UsageError,
)

__version__ = "0.1.0"

__all__ = [
    "TERMINAL_STATUSES",
    "AuthError",
    "CynorkError",
    "GatewayClient",
    "Interrupted",
    "NotFoundError",
    "ServerError",
    "UsageError",
    "__version__",
]
