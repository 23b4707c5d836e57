"""Keep freed memory in the process: glibc's defaults can make every evaluation fault its pages in.

A solve allocates and frees batch-sized tensors at every vector-field evaluation. With glibc's
defaults, blocks above a moving threshold come from ``mmap`` and the heap's free top is given back
to the kernel, so each new tensor can fault its pages in again (3x slower evaluations in some
processes: README, "Solver cost"). Fixed thresholds keep up to :data:`TRIM_THRESHOLD` of
freed memory for reuse. Set by the runner, its Ray workers and the benchmarks; a no-op where
the C library has no ``mallopt`` (not glibc).
"""
import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 64 << 20
TRIM_THRESHOLD = 256 << 20


def keep_freed_memory():
    """Fix glibc's mmap and trim thresholds; True where they were set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
