"""What every C++ op of the "cpu" backend shares: the extension (zkernels._cpu_ops, csrc/cpu_*), its
instruction-set variant, its thread count, and the argument checks that name what a caller got wrong.

The variant is the best one this CPU runs, unless `isa=` or the ZKERNELS_CPU_ISA environment variable asks
for another ("scalar", "avx2", "avx512", "avx512bf16"). The default is resolved once per process (the
first op call reads the environment and the CPU); an explicit `isa=` is checked on each call. Threads:
torch's intra-op count (torch.get_num_threads()).

The op wrappers (the C++ section at the end of rms_norm.py, qk_norm_rope.py, swiglu.py and attention.py)
hand tensors to the extension by keyword; the extension reads their shapes, strides and dtypes itself and
re-checks everything its kernels rely on.
"""

from __future__ import annotations

import functools
import os

import torch

ISA_ENV_VAR = "ZKERNELS_CPU_ISA"
FLOAT_DTYPES = (torch.float32, torch.bfloat16)

try:
    from .. import _cpu_ops as _ext
except ImportError:  # not built (e.g. a source checkout without `python setup.py build_ext --inplace`)
    _ext = None


def available() -> bool:
    """Whether the C++ extension is built and importable."""
    return _ext is not None


def extension():
    if _ext is None:
        raise RuntimeError(
            "the zkernels._cpu_ops extension is not built: run `pip install -e .` (or "
            "`python setup.py build_ext --inplace`) in the zkernels checkout, or use backend='torch'"
        )
    return _ext


def isa_names() -> list[str]:
    """The instruction-set variants built into the extension that this CPU can run, fastest first."""
    ext = extension()
    return [n for n in ext.built_isas() if ext.cpu_supports(n)]


def resolve_isa(isa: str | None = None) -> str:
    """isa, else $ZKERNELS_CPU_ISA, else "auto" (the best variant this CPU runs); checked here so a typo
    or a variant this CPU lacks is a clear error. Without `isa`, the answer for the current environment
    is computed once and kept."""
    return _resolve(isa, None if isa else os.environ.get(ISA_ENV_VAR))


@functools.lru_cache(maxsize=16)
def _resolve(isa: str | None, env: str | None) -> str:
    ext = extension()
    choice = isa or env or "auto"
    if choice == "auto":
        return ext.best_isa()
    if choice not in ext.built_isas():
        raise ValueError(
            f"unknown isa {choice!r} (from {'isa=' if isa else ISA_ENV_VAR}); "
            f"choose one of {['auto', *ext.built_isas()]}"
        )
    if not ext.cpu_supports(choice):
        raise ValueError(f"this CPU cannot run isa {choice!r}; it runs {isa_names()}")
    return choice


def threads() -> int:
    return max(1, torch.get_num_threads())


def supported_dtype(dtype: torch.dtype) -> bool:
    return dtype in FLOAT_DTYPES


def check_float(name: str, t, dtype=None) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise ValueError(f"{name} is on {t.device}; the cpu backend's ops take CPU tensors")
    if t.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} has dtype {t.dtype}; the cpu ops take float32 or bfloat16")
    if dtype is not None and t.dtype != dtype:
        raise ValueError(f"{name} has dtype {t.dtype}, but the other operands are {dtype}")


def rows_2d(name: str, t: torch.Tensor, cols: int) -> torch.Tensor:
    """t [..., cols] as a 2-D [rows, cols] view with contiguous rows (a copy only when needed)."""
    if t.dim() < 1 or t.shape[-1] != cols:
        raise ValueError(f"{name} must have last dim {cols}, got shape {tuple(t.shape)}")
    t2 = t.reshape(-1, cols)
    if t2.stride(-1) != 1 or t2.stride(0) < cols:
        t2 = t2.contiguous()
    return t2


def vector(name: str, t: torch.Tensor, n: int, dtype) -> torch.Tensor:
    check_float(name, t, dtype)
    if t.dim() != 1 or t.shape[0] != n:
        raise ValueError(f"{name} must have shape [{n}], got {tuple(t.shape)}")
    return t.contiguous()
