"""CPU search backend: the C++ extension (zkernels._hamming) when built, else the numpy fallback with
a one-time warning, so importing the package never fails."""
from __future__ import annotations

import os
import warnings

from . import _numpy_search

try:
    from .. import _hamming as _ext
    _IMPORT_ERROR = None
except ImportError as exc:  # not built (source checkout without build_ext)
    _ext = None
    _IMPORT_ERROR = exc

ENV_THREADS = "ZKERNELS_NUM_THREADS"
_warned = False


def default_threads() -> int:
    env = os.environ.get(ENV_THREADS)
    if env:
        try:
            value = int(env)
        except ValueError:
            raise ValueError(f"{ENV_THREADS} must be a positive integer, got {env!r}") from None
        if value < 1:
            raise ValueError(f"{ENV_THREADS} must be a positive integer, got {env!r}")
        return value
    try:
        return len(os.sched_getaffinity(0))  # respects taskset/cgroup CPU limits
    except AttributeError:
        return os.cpu_count() or 1


def search(db, ids, queries, k, num_threads=None, isa="auto"):
    """db uint8 [n, w] C-contiguous, ids int64 [n], queries uint8 [nq, w]; already validated.
    Returns (distances, ids) as topk_contract.py describes."""
    global _warned
    threads = default_threads() if num_threads is None else num_threads
    if _ext is not None:
        return _ext.search(db, ids, queries, k, threads, isa)
    if not _warned:
        _warned = True
        warnings.warn(f"zkernels C++ Hamming extension not available ({_IMPORT_ERROR}); using the slow "
                      "numpy fallback. Build it with `python setup.py build_ext --inplace` or reinstall.",
                      RuntimeWarning, stacklevel=3)
    return _numpy_search.search(db, ids, queries, k)


def best_isa() -> str:
    return _ext.best_isa() if _ext is not None else "numpy"


def cpu_has(isa: str) -> bool:
    return _ext is not None and _ext.cpu_has(isa)
