"""The C allocator, set for a process that makes and frees tensors of megabytes all the time."""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
"""glibc's `mallopt` parameters (malloc.h)."""
HEAP_BLOCK = 32 << 20
"""Blocks up to this size (a canvas of CANVAS_PIXELS floats) come from the heap and go back to it..."""
HEAP_SPARE = 256 << 20
"""...and the heap hands back to the system only what it holds free beyond this."""


def keep_freed_memory() -> None:
    """With glibc, keep freed blocks in the process for the next batch instead of handing them back to
    the system: a fresh block costs a page fault at each 4 KB first written, which made preprocessing a
    fifth slower (a small scan 116-128 us against 88-99). Elsewhere (macOS, musl), nothing.

    Process-wide, so only for digitscan's own processes: the command line and the loader workers, not
    a program that calls the library."""
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # a C library without mallopt
        return
    mallopt(M_MMAP_THRESHOLD, HEAP_BLOCK)
    mallopt(M_TRIM_THRESHOLD, HEAP_SPARE)
