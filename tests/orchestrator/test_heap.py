"""The orchestrator's heap policy: freed MiB-sized buffers are reused, not faulted in
again (docs/artifacts.md, fifth pass)."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

from cynode.orchestrator import heap

# Allocates eight 1 MiB blocks, touches every page, frees them, twenty times over (as
# an upload's messages come and go), and prints the page faults it took after a first
# round that warms the heap.
_CYCLES = """
import ctypes, resource, sys
from cynode.orchestrator.heap import keep_freed_buffers
if sys.argv[1] == "policy":
    assert keep_freed_buffers()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
def cycle():
    blocks = [libc.malloc(1 << 20) for _ in range(8)]
    for block in blocks:
        libc.memset(block, 1, 1 << 20)
    for block in blocks:
        libc.free(block)
cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    cycle()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _CYCLES, mode], capture_output=True, text=True, check=True
    )
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_buffers_are_reused_instead_of_faulted_in_again() -> None:
    default = _faults("default")
    kept = _faults("policy")
    # By default the freed 8 MiB go back to the kernel each round: 20 x 8 x 256 pages.
    assert default > 20 * 8 * 256 // 2
    assert kept < default // 20


def test_a_libc_without_mallopt_keeps_its_own_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_libc(name: str | None) -> object:
        raise OSError("no C library here")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    assert heap.keep_freed_buffers() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_glibc_takes_the_policy() -> None:
    # In this process too (harmless: it only keeps freed blocks for reuse).
    assert heap.keep_freed_buffers() is True
