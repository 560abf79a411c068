"""The cpu backend's memory policy: glibc's malloc keeps freed memory for reuse (keep_freed_memory), set
once per process when a model first runs on the cpu backend."""

from __future__ import annotations

import os

KEEP_MEMORY_ENV_VAR = "ZKERNELS_CPU_KEEP_FREED_MEMORY"
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters
_allocator_tuned = False


def keep_freed_memory() -> bool:
    """Asks glibc's malloc to keep freed memory for reuse instead of returning it to the system.

    Why: a forward allocates and frees the same large activations every batch (the fused QKV and
    gate/up outputs run to tens of MB). glibc serves blocks over 32 MB with mmap and unmaps them on
    free, and trims the heap's top, so each batch page-faults all of that memory in again: measured on
    the build machine, 50k (bf16) to 150k (fp32) page faults and 10-15% of a forward's CPU time. With
    mmap off for malloc and no trimming below 2 GiB, freed blocks are reused; the process keeps its
    peak activation memory (as jemalloc or tcmalloc would).

    Process-wide, so it is done once, on Linux/glibc only, not when the user set glibc's own malloc
    variables (MALLOC_MMAP_MAX_, MALLOC_TRIM_THRESHOLD_, GLIBC_TUNABLES), and not when
    ZKERNELS_CPU_KEEP_FREED_MEMORY=0. Returns whether the setting is in effect.
    """
    global _allocator_tuned
    if _allocator_tuned:
        return True
    if os.environ.get(KEEP_MEMORY_ENV_VAR, "1") == "0":
        return False
    if any(
        v in os.environ
        for v in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")
    ):
        return False
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    except (OSError, AttributeError):
        return False
    _allocator_tuned = ok
    return ok
