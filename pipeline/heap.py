"""Keep a worker's freed heap for reuse instead of handing it back to the kernel at once.

glibc returns the top of the heap to the kernel as soon as 128 KiB of it is free, and
serves blocks of 128 KiB or more with a fresh ``mmap``, unless earlier frees raised those
thresholds (it adjusts them as large blocks are freed). A worker's cycle (read a block of
megabytes, decompress, split, free, again) then pays page faults and ``brk``/``munmap``
calls on every block, and how much depends on what the parent process happened to free
before forking: measured on job B, 0.35 s of system time over 2 s. Fixed thresholds make
it the same every time: blocks up to 32 MiB come from the heap, and up to 64 MiB of free
heap is kept. Only glibc has ``mallopt``; elsewhere this does nothing.
"""

from __future__ import annotations

import contextlib

M_TRIM_THRESHOLD = -1  # <malloc.h>
M_MMAP_THRESHOLD = -3
TRIM_THRESHOLD = 64 << 20
MMAP_THRESHOLD = 32 << 20  # glibc's own ceiling for the dynamic threshold


def keep_freed_heap() -> bool:
    """Set the thresholds; whether it took effect (False off glibc)."""
    with contextlib.suppress(ImportError, OSError, AttributeError):  # it must never raise
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        return bool(
            libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
            and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        )
    return False
