"""Small helpers shared by the Triton wrappers (argument checks, launch sizes)."""
from __future__ import annotations

import functools
import os

import torch

try:
    import triton
    import triton.language as tl
    HAVE_TRITON = True
except ImportError:  # e.g. macOS: the torch backend must still import these modules
    HAVE_TRITON = False

    class _Missing:
        """Stands in for triton / triton.language so kernel definitions still parse; any launch
        goes through require_triton() first."""

        def __getattr__(self, name):
            return _Missing()

        def __call__(self, *args, **kwargs):
            return _Missing()

    triton = tl = _Missing()


def require_triton() -> None:
    if not HAVE_TRITON:
        raise RuntimeError("the triton backend needs the triton package, which cannot be imported")


FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def interpreting() -> bool:
    """True when triton runs kernels on the CPU through its interpreter (tests)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def device_capability(device) -> int | None:
    """The compute capability of a CUDA device as one number (sm_90 -> 90); None for any other device.
    Kernel configurations are chosen by it (see attention_config)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return _cuda_capability(device.index if device.index is not None else torch.cuda.current_device())


@functools.cache
def _cuda_capability(index: int) -> int:
    major, minor = torch.cuda.get_device_capability(index)
    return 10 * major + minor


def check_float(name: str, t: torch.Tensor) -> None:
    if t.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be float16, bfloat16 or float32, got {t.dtype}")


def check_same_device(**tensors) -> None:
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        raise ValueError(f"tensors are on different devices: {devices}")


def check_out(name: str, out: torch.Tensor | None, shape, dtype, device) -> None:
    """A caller-supplied output buffer must be exactly what the op would allocate (contiguous)."""
    if out is None:
        return
    if tuple(out.shape) != tuple(shape) or out.dtype != dtype or out.device != torch.device(device):
        raise ValueError(f"{name} must be {tuple(shape)} {dtype} on {device}, "
                         f"got {tuple(out.shape)} {out.dtype} on {out.device}")
    if not out.is_contiguous():
        raise ValueError(f"{name} must be contiguous")


def warps_for_row(block: int) -> int:
    """Warps for a kernel that reduces one row of `block` elements: enough lanes to cover the row
    with a few elements each, no more (one warp = 32 lanes)."""
    return max(1, min(16, block // 256))


def is_pow2(n: int) -> bool:
    return n > 0 and (n & (n - 1)) == 0
