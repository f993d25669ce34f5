"""The gateway's REST vocabulary that commands name at import time (task statuses, log
streams, the JSON object type), apart from the HTTP client: a module that only names
them loads no `cynork._client`, so `cynork --help`, `--version`, a usage error and each
Tab of shell completion start without it (docs/fast-path.md §7)."""

from __future__ import annotations

from typing import Any

TERMINAL_STATUSES = frozenset({"completed", "failed", "canceled"})
TASK_STATUSES = ("queued", "running", "completed", "failed", "canceled")
LOG_STREAMS = ("stdout", "stderr", "all")

JSONDict = dict[str, Any]
