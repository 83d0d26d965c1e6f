"""The C allocator's thresholds while a node runs (glibc only).

A node moves its traffic in buffers of 64 KiB to a few hundred KiB: a
writer's batch of frames, the ZeroMQ messages libzmq allocates for every
send and receive (in the sending thread and in its I/O thread), a read of a
TCP stream. At glibc's defaults, freeing such a buffer often leaves more
than 128 KiB free at the top of the heap, which glibc hands back to the
kernel at once (``M_TRIM_THRESHOLD``), and the next batch takes the pages
again, a page fault for every 4 KiB; blocks from 128 KiB up are mapped and
unmapped on every allocation (``M_MMAP_THRESHOLD``). Measured with
``benchmarks/bench_transports.py`` (ZeroMQ, 1 KiB messages): ~0.1-0.2
page faults per message on each side and ~0.3 µs of CPU per message of
each process, of 3-3.5.

:func:`tune_malloc` keeps up to :data:`TRIM_THRESHOLD` free at the top of
each heap and serves blocks below :data:`MMAP_THRESHOLD` from the heap. The
memory a node holds is then at most its own peak plus that margin; nothing
is held that the node did not use a moment before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
from typing import Final

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "tune_malloc"]

#: blocks below this come from the heap, not from a mapping of their own (bytes)
MMAP_THRESHOLD: Final = 4 * 1024 * 1024
#: free memory at the top of a heap kept for the next allocations (bytes): twice
#: the mmap threshold, the ratio glibc keeps when it raises both itself (which it
#: does, up to 32 and 64 MiB, only after it has mapped and freed such a block)
TRIM_THRESHOLD: Final = 2 * MMAP_THRESHOLD

# mallopt's parameter numbers (glibc's malloc.h)
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3

_tuned = False


def tune_malloc() -> bool:
    """Set the allocator's thresholds for this process (once; idempotent).

    True when they are set (glibc), False where the C library has no
    ``mallopt`` of glibc's meaning (musl, macOS): those keep their defaults.
    """
    global _tuned
    if _tuned:
        return True
    if platform.libc_ver()[0] != "glibc":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    mallopt = ctypes.CDLL(name).mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success
    _tuned = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return _tuned
