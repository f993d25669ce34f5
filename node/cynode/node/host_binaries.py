"""Facts about the host read without the Podman service: binaries and their versions."""

from __future__ import annotations

import asyncio
import re
import shutil


async def command_output(*argv: str, within: float = 10.0) -> tuple[int, str]:
    """(exit code, stdout+stderr); 127 when the binary is missing."""
    if shutil.which(argv[0]) is None:
        return 127, f"{argv[0]}: not found"
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return 124, f"{argv[0]}: timed out after {within:.0f}s"
    return proc.returncode or 0, out.decode(errors="replace").strip()


async def podman_version(binary: str = "podman") -> str:
    """'4.3.1' from `podman --version`; '' when podman is missing or says nothing usable."""
    code, out = await command_output(binary, "--version")
    match = re.search(r"(\d+\.\d+(?:\.\d+)?)", out) if code == 0 else None
    return match.group(1) if match else ""
