"""Task input limits (SPEC §2). Bytes are counted in UTF-8."""

from __future__ import annotations

KIB = 1024
MIB = 1024 * KIB

MAX_PROMPT_BYTES = 1 * MIB
MAX_SCRIPT_BYTES = 256 * KIB
MAX_COMMANDS_BYTES = 64 * KIB
MAX_ATTACHMENT_BYTES = 10 * MIB
MAX_ATTACHMENTS = 16
MAX_TASK_NAME_CHARS = 100
MAX_IMAGE_CHARS = 255
MAX_ATTACHMENT_NAME_CHARS = 255

DEFAULT_LIST_LIMIT = 50
MAX_LIST_LIMIT = 200

# Task and job statuses, lower-case words as the API shows them.
QUEUED = "queued"
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
CANCELED = "canceled"
SUPERSEDED = "superseded"
STATUSES = frozenset({QUEUED, RUNNING, COMPLETED, FAILED, CANCELED, SUPERSEDED})
TERMINAL = frozenset({COMPLETED, FAILED, CANCELED, SUPERSEDED})

PROMPT = "prompt"
SCRIPT = "script"
COMMANDS = "commands"
INPUT_MODES = (PROMPT, SCRIPT, COMMANDS)
