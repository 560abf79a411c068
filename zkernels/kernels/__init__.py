"""Op dispatch: model code calls ops by name (ops.attention, ops.rms_norm, ...) and never knows
which backend runs them.

Backends: "torch" (plain torch, the reference; runs anywhere), "triton" (fused kernels; CUDA, or the
CPU under TRITON_INTERPRET=1 for tests) and "cpu" (fused C++ kernels, zkernels._cpu_ops, and linear
layers on oneDNN-prepacked weights; CPU devices). Each op's file holds its torch reference, its Triton
kernel and its C++ wrapper; cpu.py is the cpu backend's namespace over them.

Choice, first match wins: the `backend=` argument, the ZKERNELS_BACKEND environment variable, then
"triton" on CUDA, "cpu" on a CPU device when the C++ extension is built, and "torch" otherwise.
"""
from __future__ import annotations

import os
from types import SimpleNamespace

BACKENDS = ("torch", "triton", "cpu")
ENV_VAR = "ZKERNELS_BACKEND"


def resolve_backend(backend: str | None = None, device="cpu") -> str:
    choice = backend or os.environ.get(ENV_VAR) or None
    on_cuda = str(device).startswith("cuda")
    if choice is None:
        if on_cuda:
            return "triton" if _triton_available() else "torch"
        return "cpu" if _cpu_available() else "torch"
    if choice not in BACKENDS:
        raise ValueError(f"unknown backend {choice!r} (from {'backend=' if backend else ENV_VAR}); "
                         f"choose one of {BACKENDS}")
    if choice == "triton" and not _triton_available():
        raise RuntimeError(TRITON_MISSING.format(source="backend='triton'" if backend else f"{ENV_VAR}=triton"))
    if choice == "triton" and not str(device).startswith("cuda") and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("backend 'triton' on a CPU device needs TRITON_INTERPRET=1 (interpreter, for tests)")
    if choice == "cpu" and on_cuda:
        raise RuntimeError(f"backend 'cpu' runs on CPU devices only, not {device}; choose 'triton' or 'torch'")
    if choice == "cpu" and not _cpu_available():
        raise RuntimeError(CPU_MISSING.format(source="backend='cpu'" if backend else f"{ENV_VAR}=cpu"))
    return choice


# triton is an optional extra (about 1 GB, useful only on CUDA or under the interpreter in tests), so a
# missing import must say how to get it rather than surface as an ImportError deep in a kernel module.
TRITON_MISSING = ("{source} asks for the Triton kernels, but the triton package is not installed. Install it "
                  "with `python3 -m pip install -e \".[gpu]\"` in the zkernels checkout (or `pip install "
                  "triton`; a CUDA build of torch usually brings it), or choose backend='torch'.")


CPU_MISSING = ("{source} asks for the C++ CPU kernels, but the zkernels._cpu_ops extension is not built. Build "
               "it with `pip install -e .` (or `python setup.py build_ext --inplace`) in the checkout, or choose "
               "backend='torch'.")


def _cpu_available() -> bool:
    from . import cpu_runtime
    return cpu_runtime.available()


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
        if not _triton_available():
            raise RuntimeError(TRITON_MISSING.format(source="get_ops('triton')"))
        from .attention import attention_triton
        from .qk_norm_rope import qk_norm_rope_triton
        from .rms_norm import add_rms_norm_triton, rms_norm_triton
        from .swiglu import swiglu_triton
        return SimpleNamespace(name="triton", rms_norm=rms_norm_triton, add_rms_norm=add_rms_norm_triton,
                               qk_norm_rope=qk_norm_rope_triton, swiglu=swiglu_triton,
                               attention=attention_triton)
    if backend == "cpu":
        if not _cpu_available():
            raise RuntimeError(CPU_MISSING.format(source="get_ops('cpu')"))
        from .cpu import cpu_ops
        return cpu_ops()
    raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
