"""Op dispatch: model code calls ops by name (ops.attention, ops.rms_norm, ...) and never knows
which backend runs them.

Backends: "torch" (plain torch, the reference; runs anywhere) and "triton" (fused kernels; CUDA, or the
CPU under TRITON_INTERPRET=1 for tests). Choice, first match wins: the `backend=` argument, the
ZKERNELS_BACKEND environment variable, then "triton" on CUDA and "torch" elsewhere.
"""
from __future__ import annotations

import os
from types import SimpleNamespace

BACKENDS = ("torch", "triton")
ENV_VAR = "ZKERNELS_BACKEND"


def resolve_backend(backend: str | None = None, device="cpu") -> str:
    choice = backend or os.environ.get(ENV_VAR) or None
    if choice is None:
        return "triton" if str(device).startswith("cuda") and _triton_available() else "torch"
    if choice not in BACKENDS:
        raise ValueError(f"unknown backend {choice!r} (from {'backend=' if backend else ENV_VAR}); "
                         f"choose one of {BACKENDS}")
    if choice == "triton" and not _triton_available():
        raise RuntimeError("backend 'triton' was asked for but triton cannot be imported")
    if choice == "triton" and not str(device).startswith("cuda") and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("backend 'triton' on a CPU device needs TRITON_INTERPRET=1 (interpreter, for tests)")
    return choice


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


def get_ops(backend: str) -> SimpleNamespace:
    """A namespace with one callable per op name, all from the chosen backend."""
    if backend == "torch":
        from .attention import attention_torch
        from .qk_norm_rope import qk_norm_rope_torch
        from .rms_norm import add_rms_norm_torch, rms_norm_torch
        from .swiglu import swiglu_torch
        return SimpleNamespace(name="torch", rms_norm=rms_norm_torch, add_rms_norm=add_rms_norm_torch,
                               qk_norm_rope=qk_norm_rope_torch, swiglu=swiglu_torch,
                               attention=attention_torch)
    if backend == "triton":
        from .attention import attention_triton
        from .qk_norm_rope import qk_norm_rope_triton
        from .rms_norm import add_rms_norm_triton, rms_norm_triton
        from .swiglu import swiglu_triton
        return SimpleNamespace(name="triton", rms_norm=rms_norm_triton, add_rms_norm=add_rms_norm_triton,
                               qk_norm_rope=qk_norm_rope_triton, swiglu=swiglu_triton,
                               attention=attention_triton)
    raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
