"""Input files for `task create`, checked before any request leaves the machine.

The limits mirror the gateway's (SPEC §2) so a user learns about a bad or oversized file
at once, with exit 2, instead of after a login refresh and an upload that ends in 413.
"""

from __future__ import annotations

import os
import stat

from cynork._errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

KIB = 1024
MIB = 1024 * KIB
PROMPT_LIMIT = 1 * MIB
SCRIPT_LIMIT = 256 * KIB
COMMANDS_LIMIT = 64 * KIB
ATTACHMENT_LIMIT = 10 * MIB
MAX_ATTACHMENTS = 16


def _human(size: int) -> str:
    if size >= MIB and size % MIB == 0:
        return f"{size // MIB} MiB"
    if size >= KIB and size % KIB == 0:
        return f"{size // KIB} KiB"
    return f"{size} bytes"


def read_checked(path: str, *, what: str, limit: int) -> bytes:
    """The file's bytes, after checking it exists, is regular, readable and small enough."""
    try:
        info = os.stat(path)
    except FileNotFoundError as exc:
        raise UsageError(f"{what} file {path} does not exist") from exc
    except OSError as exc:
        raise UsageError(f"cannot use {what} file {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise UsageError(f"{what} file {path} is not a regular file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{what} file {path} is not readable")
    if info.st_size > limit:
        raise UsageError(
            f"{what} file {path} is {info.st_size} bytes, over the {_human(limit)} limit"
        )
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise UsageError(f"cannot read {what} file {path}: {exc.strerror}") from exc
    # A file can grow between stat and read; the limit holds for what is sent.
    if len(data) > limit:
        raise UsageError(f"{what} file {path} is over the {_human(limit)} limit")
    return data


def read_text_checked(path: str, *, what: str, limit: int) -> str:
    data = read_checked(path, what=what, limit=limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{what} file {path} is not UTF-8 text") from exc


def check_text_limit(text: str, *, what: str, limit: int) -> None:
    size = len(text.encode("utf-8"))
    if size > limit:
        raise UsageError(f"{what} is {size} bytes, over the {_human(limit)} limit")


def read_commands_file(path: str) -> list[str]:
    """One command per line; blank lines and `#` comment lines are skipped."""
    text = read_text_checked(path, what="commands", limit=COMMANDS_LIMIT)
    return [
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


class Attachment:
    """A plain class, not a dataclass: every `task create` imports this module (see
    cynork._config)."""

    __slots__ = ("content", "name")

    def __init__(self, name: str, content: bytes) -> None:
        self.name = name
        self.content = content

    def to_json(self) -> dict[str, str]:
        # proto3 JSON renders `bytes` as standard base64. Imported here: only a task
        # with attachments needs it, and every `task create` loads this module.
        import base64

        return {"name": self.name, "content": base64.b64encode(self.content).decode("ascii")}


def attachment_name(path: str, cwd: Path | None = None) -> str:
    """The name an `--attach` path is sent under: its relative form (`notes/a.txt`), as
    upstream's CLI sends it; the base name when the path leaves the current directory.
    The node places the file by its base name either way (SPEC §2.4)."""
    # Imported here: only attachments need it, and pathlib is ~1.5 ms of a start.
    from pathlib import Path

    here = (cwd or Path.cwd()).resolve()
    given = Path(os.path.normpath(path))
    if given.is_absolute():
        try:
            given = given.relative_to(here)
        except ValueError:
            return given.name
    parts = given.parts
    if not parts or ".." in parts:
        return Path(path).resolve().name
    return given.as_posix()


def read_attachments(paths: tuple[str, ...] | list[str]) -> list[Attachment]:
    if len(paths) > MAX_ATTACHMENTS:
        raise UsageError(f"{len(paths)} attachments given, at most {MAX_ATTACHMENTS} are allowed")
    seen: dict[str, str] = {}
    attachments = []
    for path in paths:
        name = attachment_name(path)
        base = name.rsplit("/", 1)[-1]
        if base in seen:
            raise UsageError(
                f"attachments {seen[base]} and {path} are both named {base} in /workspace; "
                "they would overwrite each other"
            )
        seen[base] = path
        content = read_checked(path, what="attachment", limit=ATTACHMENT_LIMIT)
        attachments.append(Attachment(name, content))
    return attachments
