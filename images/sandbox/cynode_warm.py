#!/usr/bin/python3
"""cynode-warm: the waiting runner of a warm single-use sandbox (SPEC §4.10).

The node creates and starts a sandbox container ahead of any job, with every sandbox
rule applied, running this program. It blocks on stdin until the node hands it one
job as one JSON line (the manifest), then becomes that job:

    {"argv": ["/bin/sh", "-c", "..."],          what the job runs (as on the cold path)
     "env": {"NAME": "value", ...},             the job's environment, over the image's
     "files": [{"name": "script", "mode": 493, "data": "<base64>"}, ...]}

The files (the script, attachments) are written into /workspace in order (a later one
replaces an earlier one of the same name), stdin is pointed at /dev/null (a cold job
has no stdin either), and the job's command replaces this process (execve), so the
job's exit code and an OOM kill are the container's, read by the node as for a cold
job. The container is never given a second job: the node removes it after this one.

Exit codes of its own, before the job runs: 2 no or a bad manifest; 126/127 the
command cannot be run or found (as a shell says). Standard library of the image's
python3 only (Debian's 3.11); tools/build_images.sh installs it as
/usr/local/bin/cynode-warm.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import sys
from pathlib import Path
from typing import IO, Any

NAME = "cynode-warm"
WORKSPACE = "/workspace"
# A job's script and attachments travel in the manifest; the orchestrator bounds them
# far below this, so a longer line is a broken sender, not a job.
MAX_MANIFEST_BYTES = 256 * 1024 * 1024


class Failure(Exception):
    """One readable line for stderr."""


def read_manifest(stream: IO[bytes], limit: int = MAX_MANIFEST_BYTES) -> dict[str, Any]:
    line = stream.readline(limit + 1)
    if not line.strip():
        raise Failure("no job was handed over (stdin closed)")
    if len(line) > limit:
        raise Failure(f"the manifest is longer than {limit} bytes")
    try:
        manifest = json.loads(line)
    except ValueError as exc:
        raise Failure(f"the manifest is not JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise Failure("the manifest is not a JSON object")
    argv = manifest.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise Failure("the manifest's argv must be a non-empty list of strings")
    env = manifest.get("env", {})
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise Failure("the manifest's env must map strings to strings")
    if not isinstance(manifest.get("files", []), list):
        raise Failure("the manifest's files must be a list")
    return manifest


def write_files(files: list[Any], workspace: str = WORKSPACE) -> None:
    """Each file by its base name only (the node sends safe names; a name with a slash,
    '.' or '..' is refused here too, so nothing lands outside the workspace)."""
    for item in files:
        if not isinstance(item, dict):
            raise Failure("a manifest file must be an object")
        name, mode, data = item.get("name"), item.get("mode", 0o644), item.get("data", "")
        if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\0" in name:
            raise Failure(f"refusing the file name {name!r}")
        if not isinstance(mode, int) or not 0 <= mode <= 0o777 or not isinstance(data, str):
            raise Failure(f"bad mode or data for {name!r}")
        try:
            content = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise Failure(f"the data of {name!r} is not base64") from None
        path = Path(workspace) / name
        try:
            # O_NOFOLLOW: a link left in the workspace by the image is replaced, not followed.
            if path.is_symlink():
                path.unlink()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
            with os.fdopen(fd, "wb") as out:
                out.write(content)
            path.chmod(mode)  # the umask may have taken bits the job asked for
        except OSError as exc:
            raise Failure(f"cannot write {path}: {exc.strerror}") from None


def become(argv: list[str], env: dict[str, str]) -> int:
    """Replaces this process with the job; returns only when that fails."""
    environ = dict(os.environ)
    environ.update(env)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdout.flush()
    try:
        os.execvpe(argv[0], argv, environ)
    except FileNotFoundError:
        sys.stderr.write(f"{NAME}: {argv[0]}: not found\n")
        return 127
    except OSError as exc:
        sys.stderr.write(f"{NAME}: {argv[0]}: {exc.strerror}\n")
        return 126
    return 0  # pragma: no cover - execvpe does not return


def main(argv: list[str], stdin: IO[bytes] | None = None) -> int:
    if len(argv) != 1:
        sys.stderr.write(f"usage: {NAME} (reads one job manifest line on stdin)\n")
        return 2
    try:
        manifest = read_manifest(stdin if stdin is not None else sys.stdin.buffer)
        write_files(manifest.get("files", []))
    except Failure as exc:
        sys.stderr.write(f"{NAME}: {exc}\n")
        return 2
    return become(manifest["argv"], manifest.get("env", {}))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
