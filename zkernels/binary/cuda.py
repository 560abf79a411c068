"""On-demand build of the CUDA Hamming kernel (csrc/hamming_cuda.cu).

Never built at install time (a CPU install must not need nvcc or a CUDA torch): the first search on a
CUDA index compiles it with torch.utils.cpp_extension.load (ninja, cached under torch's extension
directory, so later processes load it in milliseconds).
"""
from __future__ import annotations

import pathlib
import threading

SOURCE = pathlib.Path(__file__).resolve().parents[2] / "csrc" / "hamming_cuda.cu"
_lock = threading.Lock()
_module = None


def load():
    global _module
    with _lock:
        if _module is None:
            import torch
            from torch.utils.cpp_extension import load as _load

            if not torch.cuda.is_available():
                raise RuntimeError("the CUDA Hamming kernel needs a CUDA device and a CUDA build of torch")
            if not SOURCE.exists():
                raise RuntimeError(f"CUDA source not found at {SOURCE}; install zkernels from a source checkout")
            _module = _load(name="zk_hamming_cuda", sources=[str(SOURCE)],
                            extra_cuda_cflags=["-O3", "-std=c++17"], verbose=False)
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
