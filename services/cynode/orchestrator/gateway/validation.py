"""Turns a CreateTaskRequest into a NewTask, or says precisely what is wrong.

Over a size limit is `TooLarge` (413); anything else malformed is `Invalid` (400).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cynode.gateway.v1 import tasks_pb2
from cynode.orchestrator.gateway import limits as L

_ULID_RE = re.compile(r"^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$")
_NAME_RE = re.compile(r"^\w[\w .-]*$")
_IMAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$")


class Invalid(ValueError):
    """Malformed request (400)."""


class TooLarge(ValueError):
    """A size limit exceeded (413)."""


@dataclass(frozen=True)
class NewTask:
    input_mode: str
    prompt: str | None = None
    script: str | None = None
    commands: list[str] | None = None
    name: str | None = None
    use_inference: bool = False
    timeout_seconds: int = 0
    image: str | None = None
    attachments: list[tuple[str, bytes]] = field(default_factory=list)

    @property
    def needs_inference(self) -> bool:
        return self.input_mode == L.PROMPT or self.use_inference


def looks_like_task_id(text: str) -> bool:
    return bool(_ULID_RE.fullmatch(text))


def _utf8_len(text: str, what: str) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise Invalid(f"{what} is not valid UTF-8 text") from exc


def _text(text: str, what: str, limit: int) -> str:
    if "\x00" in text:
        raise Invalid(f"{what} must not contain NUL characters")
    if _utf8_len(text, what) > limit:
        raise TooLarge(f"{what} exceeds {limit} bytes")
    return text


def _mode(request: tasks_pb2.CreateTaskRequest) -> str:
    given = [
        mode
        for mode, present in (
            (L.PROMPT, bool(request.prompt)),
            (L.SCRIPT, bool(request.script)),
            (L.COMMANDS, len(request.commands) > 0),
        )
        if present
    ]
    if len(given) > 1:
        raise Invalid(f"give exactly one input mode; got {' and '.join(given)}")
    declared = request.input_mode.strip().lower()
    if declared and declared not in L.INPUT_MODES:
        raise Invalid(f"input_mode must be one of {', '.join(L.INPUT_MODES)}")
    if not given:
        raise Invalid(f"the {declared or 'prompt'} is empty: give a prompt, a script or commands")
    # No declared mode: the one input given says which (prompt being the usual case).
    if declared and declared != given[0]:
        raise Invalid(f"input_mode is {declared!r} but the request gives {given[0]}")
    return given[0]


def _name(raw: str | None) -> str | None:
    if not raw:
        return None
    name = raw.strip()
    if not name:
        raise Invalid("task_name must not be blank")
    if len(name) > L.MAX_TASK_NAME_CHARS:
        raise Invalid(f"task_name may have at most {L.MAX_TASK_NAME_CHARS} characters")
    if not _NAME_RE.fullmatch(name):
        raise Invalid("task_name may hold letters, digits, spaces, '.', '_' and '-'")
    if looks_like_task_id(name):
        raise Invalid("task_name must not look like a task id")
    return name


def _attachment_base(name: str) -> str:
    """The file name an attachment lands under in /workspace; Invalid for a bad name.

    A name may be a relative path (`notes/a.txt`, what `cynork -a notes/a.txt` sends):
    it is kept as given for the task's listing, while the node places the file by its
    last component, so it can never land outside /workspace.
    """
    parts = name.split("/")
    if (
        not name
        or len(name) > L.MAX_ATTACHMENT_NAME_CHARS
        or any(part in ("", ".", "..") for part in parts)
        or any(c in name for c in "\\\x00")
        or not name.isprintable()
    ):
        raise Invalid(
            "an attachment needs a file name or a relative path without '.' or '..' parts "
            f"(at most {L.MAX_ATTACHMENT_NAME_CHARS} characters)"
        )
    return parts[-1]


def _attachments(request: tasks_pb2.CreateTaskRequest) -> list[tuple[str, bytes]]:
    if len(request.attachments) > L.MAX_ATTACHMENTS:
        raise TooLarge(f"at most {L.MAX_ATTACHMENTS} attachments")
    seen: dict[str, str] = {}
    out: list[tuple[str, bytes]] = []
    for att in request.attachments:
        name = att.name
        base = _attachment_base(name)
        if base in seen:
            raise Invalid(
                f"attachments {seen[base]!r} and {name!r} would both be /workspace/{base}"
                if seen[base] != name
                else f"attachment {name!r} given twice"
            )
        if len(att.content) > L.MAX_ATTACHMENT_BYTES:
            raise TooLarge(f"attachment {name!r} exceeds {L.MAX_ATTACHMENT_BYTES} bytes")
        seen[base] = name
        out.append((name, bytes(att.content)))
    return out


def validate_create(request: tasks_pb2.CreateTaskRequest) -> NewTask:
    mode = _mode(request)
    prompt = script = None
    commands: list[str] | None = None
    if mode == L.PROMPT:
        prompt = _text(request.prompt, "prompt", L.MAX_PROMPT_BYTES)
        if not prompt.strip():
            raise Invalid("the prompt is empty")
    elif mode == L.SCRIPT:
        script = _text(request.script, "script", L.MAX_SCRIPT_BYTES)
        if not script.strip():
            raise Invalid("the script is empty")
    else:
        commands = list(request.commands)
        total = sum(_utf8_len(c, "a command") for c in commands)
        if total > L.MAX_COMMANDS_BYTES:
            raise TooLarge(f"commands exceed {L.MAX_COMMANDS_BYTES} bytes in total")
        for c in commands:
            if not c.strip() or "\x00" in c:
                raise Invalid("every command must be a non-empty string without NUL")
    if request.timeout_seconds < 0:
        raise Invalid("timeout_seconds must be 0 (node default) or more")
    image = request.image.strip() or None
    if image is not None and (len(image) > L.MAX_IMAGE_CHARS or not _IMAGE_RE.fullmatch(image)):
        raise Invalid("image must be an image reference such as localhost/cynode-sandbox:latest")
    return NewTask(
        input_mode=mode,
        prompt=prompt,
        script=script,
        commands=commands,
        name=_name(request.task_name if request.HasField("task_name") else None),
        use_inference=request.use_inference,
        timeout_seconds=request.timeout_seconds,
        image=image,
        attachments=_attachments(request),
    )
