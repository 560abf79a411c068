"""On-demand build of the CUDA Hamming kernel (csrc/hamming_cuda.cu).

Never built at install time (a CPU install must not need nvcc or a CUDA torch): the first search on a
CUDA index compiles it with torch.utils.cpp_extension.load (ninja, cached under torch's extension
directory, or $ZKERNELS_CUDA_BUILD_DIR when set, so later processes load it in milliseconds).

torch's build holds a `lock` file in the build folder while it compiles; a build killed part-way (a time
limit) leaves it behind, and every later load waits on it for ever. A lock older than STALE_LOCK_S (far
longer than this one file takes to build) is therefore removed before loading. benchmarks/run_gpu.sh
also gives each run a build folder of its own.
"""
from __future__ import annotations

import os
import pathlib
import threading
import time
import warnings

SOURCE = pathlib.Path(__file__).resolve().parents[2] / "csrc" / "hamming_cuda.cu"
NAME = "zk_hamming_cuda"
BUILD_DIR_ENV = "ZKERNELS_CUDA_BUILD_DIR"
STALE_LOCK_S = 600
_lock = threading.Lock()
_module = None


def build_directory() -> str | None:
    """$ZKERNELS_CUDA_BUILD_DIR (created if missing), else None: torch's own extension folder."""
    folder = os.environ.get(BUILD_DIR_ENV)
    if folder:
        os.makedirs(folder, exist_ok=True)
    return folder or None


def clear_stale_lock(folder: str | os.PathLike, max_age_s: float = STALE_LOCK_S) -> bool:
    """Removes torch's build lock in `folder` when it is older than max_age_s; True if it did."""
    lock = pathlib.Path(folder) / "lock"
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return False
    if age < max_age_s:
        return False
    warnings.warn(f"removing a stale CUDA extension build lock ({lock}, {age:.0f} s old): a build was "
                  "killed before it finished", stacklevel=2)
    lock.unlink(missing_ok=True)
    return True


def load():
    global _module
    with _lock:
        if _module is None:
            import torch
            from torch.utils import cpp_extension

            if not torch.cuda.is_available():
                raise RuntimeError("the CUDA Hamming kernel needs a CUDA device and a CUDA build of torch")
            if not SOURCE.exists():
                raise RuntimeError(f"CUDA source not found at {SOURCE}; install zkernels from a source checkout")
            folder = build_directory()
            clear_stale_lock(folder or cpp_extension._get_build_directory(NAME, verbose=False))
            _module = cpp_extension.load(name=NAME, sources=[str(SOURCE)], extra_cuda_cflags=["-O3", "-std=c++17"],
                                         build_directory=folder, verbose=False)
    return _module


def distances(queries, codes):
    """int32 [nq, n] distances of uint8 CUDA tensors (contiguous, same device, same width)."""
    import torch

    ext = load()
    nq, n, width = queries.shape[0], codes.shape[0], codes.shape[1]
    out = torch.empty((nq, n), dtype=torch.int32, device=codes.device)
    with torch.cuda.device(codes.device):
        stream = torch.cuda.current_stream(codes.device).cuda_stream
        ext.distances(queries.data_ptr(), codes.data_ptr(), out.data_ptr(), nq, n, width, stream)
    return out
