"""Keep the C heap steady during training: freed memory stays with the process.

By default glibc gives freed memory at the top of the heap back to the system once enough is free there,
and serves large blocks from ``mmap``; each step then page-faults some of its buffers in again, and how
many depends on where long-lived small objects happen to lie. That moves a LeNet-sized CPU step by up to
~10% between identical processes. With an mmap threshold of 32 MB and a trim threshold of 1 GB the
buffers stay mapped. A user's own ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_`` (glibc's
environment tunables) is left to rule.
"""

from __future__ import annotations

import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
TUNABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def steady_heap(respect_environment: bool = True) -> bool:
    """Set the thresholds with ``mallopt``; returns whether they are set (False without glibc, or where the
    environment chooses its own and ``respect_environment``)."""
    if respect_environment and any(name in os.environ for name in TUNABLES):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):
        return False
