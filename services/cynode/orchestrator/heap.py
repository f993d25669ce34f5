"""The C heap's policy for this process: freed buffers of a MiB or so are kept for the
next ones instead of being handed back to the kernel (docs/artifacts.md, fifth pass).

gRPC reads an upload's bytes into buffers it mallocs per read, and each 1 MiB message
becomes a few more (the message, its Python bytes). glibc's defaults return the top of
a heap to the kernel once more than about 2 MiB of it is free (its trim threshold
follows the largest freed block, up to twice 1 MiB here), so each next message faulted
its pages in again and the kernel zeroed every one of them: about half of the
orchestrator's CPU in an upload. With a fixed trim threshold of TRIM_BYTES and blocks
up to MMAP_BYTES taken from the heap, the same pages serve message after message.
What stays resident is bounded by TRIM_BYTES of free heap per arena.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# mallopt(3) parameters (glibc <malloc.h>).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

# Free heap kept per arena before the rest goes back to the kernel.
TRIM_BYTES = 32 << 20
# Blocks of this size or more are their own mappings, unmapped when freed (a message
# at the gRPC limit of 16 MiB, say); the heap serves smaller ones (1 MiB upload
# messages, 4 MiB download reads) and keeps them for the next.
MMAP_BYTES = 16 << 20


def keep_freed_buffers() -> bool:
    """Sets the heap policy above; False where the C library has no mallopt (not
    glibc), which leaves its own policy in place."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_BYTES) == 1)
    done = bool(mallopt(M_TRIM_THRESHOLD, TRIM_BYTES) == 1) and done
    if not done:  # pragma: no cover - a libc that refuses the values
        log.warning("the C library refused the heap policy; its defaults stay")
    return done
