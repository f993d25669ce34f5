"""What a job runs and which files it finds in /workspace, from its input mode (pure)."""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass

from cynode.jobs.v1 import job_pb2
from cynode.node.runtime.sandbox import SANDBOX_UID, WORKSPACE

SCRIPT_NAME = "script"
PROMPT_NAME = "prompt.txt"
# The prompt runner baked into the sandbox image (images/sandbox/cynode_prompt.py). The
# prompt reaches it as a file, never on a command line, so it is never run or expanded.
PROMPT_RUNNER = "/usr/local/bin/cynode-prompt"
# Each command runs under its own `/bin/sh -c`, in order; the first failure ends the job
# with that command's exit code. Commands travel as arguments, so no quoting is needed.
COMMANDS_RUNNER = 'for c in "$@"; do /bin/sh -c "$c" || exit $?; done'
_MAX_NAME_BYTES = 255


class UnsupportedJob(Exception):
    """The node cannot run this job as asked; the message is the short reason."""


@dataclass(frozen=True)
class WorkspaceFile:
    name: str
    content: bytes
    mode: int = 0o644


@dataclass(frozen=True)
class JobPlan:
    command: list[str]
    files: tuple[WorkspaceFile, ...] = ()
    # Runs in a pod with the inference proxy (prompt jobs and use_inference jobs).
    needs_inference: bool = False


def safe_file_name(name: str, index: int) -> str:
    """The last path component, without control characters; never '', '.' or '..'.

    Only the base name is kept, so an attachment can never land outside /workspace.
    """
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip()
    while len(base.encode()) > _MAX_NAME_BYTES:
        base = base[:-1]
    if base in ("", ".", ".."):
        return f"attachment-{index}"
    return base


def plan_job(spec: job_pb2.JobSpec) -> JobPlan:
    """The container command and workspace files for a job; raises UnsupportedJob."""
    attachments = tuple(
        WorkspaceFile(safe_file_name(a.name, i), a.content) for i, a in enumerate(spec.attachments)
    )
    inference = spec.use_inference
    if spec.input_mode == job_pb2.INPUT_MODE_PROMPT:
        if not spec.prompt.strip():
            raise UnsupportedJob("prompt mode needs a prompt")
        # Written last, so the prompt wins over an attachment of the same name.
        prompt = WorkspaceFile(PROMPT_NAME, spec.prompt.encode())
        command = [PROMPT_RUNNER, f"{WORKSPACE}/{PROMPT_NAME}"]
        return JobPlan(command=command, files=(*attachments, prompt), needs_inference=True)
    if spec.input_mode == job_pb2.INPUT_MODE_COMMANDS:
        if not spec.commands:
            raise UnsupportedJob("commands mode needs at least one command")
        command = ["/bin/sh", "-c", COMMANDS_RUNNER, "cynode-commands", *spec.commands]
        return JobPlan(command=command, files=attachments, needs_inference=inference)
    if spec.input_mode == job_pb2.INPUT_MODE_SCRIPT:
        if not spec.script:
            raise UnsupportedJob("script mode needs a script")
        path = f"{WORKSPACE}/{SCRIPT_NAME}"
        # With a shebang the kernel picks the interpreter; without one, POSIX sh.
        command = [path] if spec.script.startswith("#!") else ["/bin/sh", path]
        # Written last, so the script wins over an attachment of the same name.
        script = WorkspaceFile(SCRIPT_NAME, spec.script.encode(), 0o755)
        return JobPlan(command=command, files=(*attachments, script), needs_inference=inference)
    raise UnsupportedJob("no input mode")


def workspace_tar(files: tuple[WorkspaceFile, ...]) -> bytes:
    """A tar of the files, owned by the sandbox user, for put_archive into /workspace.

    The archive ends right after its two zero end blocks, without tarfile's padding to a
    10 KiB record: Podman's copier stops reading at the end blocks and exits, and the
    unread padding then fails the upload with "broken pipe" (buildah issue 6573).
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for item in files:
            info = tarfile.TarInfo(item.name)
            info.size = len(item.content)
            info.mode = item.mode
            info.uid = info.gid = SANDBOX_UID
            tar.addfile(info, io.BytesIO(item.content))
        end = tar.offset
    return buffer.getvalue()[: end + 2 * tarfile.BLOCKSIZE]
