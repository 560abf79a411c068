"""The "cpu" backend: the model's ops as fused C++ kernels (zkernels._cpu_ops, csrc/cpu_*), and the
linear layers on weights prepacked for oneDNN.

Same names and semantics as the torch references (rms_norm.py, qk_norm_rope.py, swiglu.py,
attention.py), which stay the reference the tests hold these to. Each op is one pass over its data,
float32 math, outputs in the input dtype (float32 or bfloat16) with no separate dtype copies; the
attention is one call for every sequence and head of a packed batch.

This module validates what it is given (device, dtype, shape, strides) and raises a ValueError that
names the offending argument; the C++ side re-checks index arrays and positions, so bad input is an
error, never a crash. The instruction-set variant is the best this CPU runs, unless `isa=` or the
ZKERNELS_CPU_ISA environment variable asks for another ("scalar", "avx2", "avx512"); threads: torch's
intra-op count (torch.get_num_threads()).

`get_ops("cpu")` wraps these so that what they do not cover (float16, a head_dim that is not a multiple
of 16) runs the torch reference instead.
"""

from __future__ import annotations

import os

import torch

from .attention_inputs import check_attention_inputs

ISA_ENV_VAR = "ZKERNELS_CPU_ISA"
_DTYPE_CODE = {torch.float32: 0, torch.bfloat16: 1}

try:
    from .. import _cpu_ops as _ext
except ImportError:  # not built (e.g. a source checkout without `python setup.py build_ext --inplace`)
    _ext = None


def available() -> bool:
    """Whether the C++ extension is built and importable."""
    return _ext is not None


def _require():
    if _ext is None:
        raise RuntimeError(
            "the zkernels._cpu_ops extension is not built: run `pip install -e .` (or "
            "`python setup.py build_ext --inplace`) in the zkernels checkout, or use backend='torch'"
        )
    return _ext


def isa_names() -> list[str]:
    """The instruction-set variants built into the extension that this CPU can run, fastest first."""
    ext = _require()
    return [n for n in ext.built_isas() if ext.cpu_supports(n)]


def resolve_isa(isa: str | None = None) -> str:
    """isa, else $ZKERNELS_CPU_ISA, else "auto" (the best variant this CPU runs); checked here so a
    typo or a variant this CPU lacks is a clear error."""
    ext = _require()
    choice = isa or os.environ.get(ISA_ENV_VAR) or "auto"
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


# ------------------------------------------------------------------------------------------ checks
def supported_dtype(dtype: torch.dtype) -> bool:
    return dtype in _DTYPE_CODE


def _check_float(name: str, t, dtype=None) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise ValueError(f"{name} is on {t.device}; the cpu backend's ops take CPU tensors")
    if t.dtype not in _DTYPE_CODE:
        raise ValueError(f"{name} has dtype {t.dtype}; the cpu ops take float32 or bfloat16")
    if dtype is not None and t.dtype != dtype:
        raise ValueError(f"{name} has dtype {t.dtype}, but the other operands are {dtype}")


def _rows(name: str, t: torch.Tensor, cols: int) -> torch.Tensor:
    """t [..., cols] as a 2-D [rows, cols] view with contiguous rows (a copy only when needed)."""
    if t.dim() < 1 or t.shape[-1] != cols:
        raise ValueError(f"{name} must have last dim {cols}, got shape {tuple(t.shape)}")
    t2 = t.reshape(-1, cols)
    if t2.stride(-1) != 1 or t2.stride(0) < cols:
        t2 = t2.contiguous()
    return t2


def _vector(name: str, t: torch.Tensor, n: int, dtype) -> torch.Tensor:
    _check_float(name, t, dtype)
    if t.dim() != 1 or t.shape[0] != n:
        raise ValueError(f"{name} must have shape [{n}], got {tuple(t.shape)}")
    return t.contiguous()


def _threads() -> int:
    return max(1, torch.get_num_threads())


# ------------------------------------------------------------------------------------------ RMSNorm
def _rms(x, residual, weight, eps, isa):
    ext = _require()
    _check_float("x", x)
    if x.dim() < 1 or x.shape[-1] == 0:
        raise ValueError(f"x must have a non-empty last dim, got shape {tuple(x.shape)}")
    H = x.shape[-1]
    w = _vector("weight", weight, H, x.dtype)
    x2 = _rows("x", x, H)
    out = torch.empty(x.shape, dtype=x.dtype)
    o2 = out.view(-1, H)
    r2 = s2 = None
    summed = None
    if residual is not None:
        _check_float("residual", residual, x.dtype)
        if residual.shape != x.shape:
            raise ValueError(f"residual has shape {tuple(residual.shape)}, x has {tuple(x.shape)}")
        r2 = _rows("residual", residual, H)
        summed = torch.empty(x.shape, dtype=x.dtype)
        s2 = summed.view(-1, H)
    ext.rms_norm(
        x2.data_ptr(),
        x2.stride(0),
        r2.data_ptr() if r2 is not None else 0,
        r2.stride(0) if r2 is not None else 0,
        w.data_ptr(),
        o2.data_ptr(),
        o2.stride(0),
        s2.data_ptr() if s2 is not None else 0,
        s2.stride(0) if s2 is not None else 0,
        x2.shape[0],
        H,
        float(eps),
        _DTYPE_CODE[x.dtype],
        resolve_isa(isa),
        _threads(),
    )
    return out, summed


def rms_norm_cpu(x: torch.Tensor, weight: torch.Tensor, eps: float, *, isa: str | None = None) -> torch.Tensor:
    """C++ rms_norm_torch: weight * round(x * rsqrt(mean(x^2) + eps)), one pass per row."""
    return _rms(x, None, weight, eps, isa)[0]


def add_rms_norm_cpu(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float, *, isa: str | None = None
):
    """C++ add_rms_norm_torch: (rms_norm(x + residual), x + residual) in one pass per row."""
    if residual is None:
        raise ValueError("residual must be a tensor")
    return _rms(x, residual, weight, eps, isa)


# ------------------------------------------------------------------------------------------ QK-norm + RoPE
def _head_side(name, x, w, pos, dtype):
    _check_float(name, x, dtype)
    if x.dim() != 3:
        raise ValueError(f"{name} must be [tokens, heads, head_dim], got shape {tuple(x.shape)}")
    if x.stride(2) != 1:
        x = x.contiguous()
    D = x.shape[2]
    w = _vector(f"{name}_weight", w, D, dtype)
    if not isinstance(pos, torch.Tensor) or pos.dim() != 1 or pos.shape[0] != x.shape[0]:
        raise ValueError(
            f"{name}_positions must be a 1-D tensor of {x.shape[0]} positions, got "
            f"{tuple(pos.shape) if isinstance(pos, torch.Tensor) else type(pos).__name__}"
        )
    if pos.dtype not in (torch.int32, torch.int64) or pos.device.type != "cpu":
        raise ValueError(f"{name}_positions must be an int32/int64 CPU tensor, got {pos.dtype} on {pos.device}")
    return x, w, pos.to(torch.int64).contiguous()


def qk_norm_rope_cpu(q, k, q_weight, k_weight, cos, sin, q_positions, k_positions, eps, *, isa: str | None = None):
    """C++ qk_norm_rope_torch: per-head RMSNorm then rotate-half RoPE of q [Tq, Hq, D] and k [Tk, Hkv, D]
    (strided views into the fused QKV output are read in place); returns contiguous (q_out, k_out)."""
    ext = _require()
    _check_float("q", q)
    q, q_weight, q_positions = _head_side("q", q, q_weight, q_positions, q.dtype)
    k, k_weight, k_positions = _head_side("k", k, k_weight, k_positions, q.dtype)
    D = q.shape[2]
    if k.shape[2] != D or D % 2:
        raise ValueError(f"q and k must share an even head_dim, got {tuple(q.shape)} and {tuple(k.shape)}")
    for name, t in (("cos", cos), ("sin", sin)):
        if (
            not isinstance(t, torch.Tensor)
            or t.dtype != torch.float32
            or t.device.type != "cpu"
            or t.dim() != 2
            or t.shape[1] != D // 2
        ):
            raise ValueError(
                f"{name} must be a float32 CPU tensor [max_positions, {D // 2}], got "
                f"{tuple(t.shape)} {t.dtype} on {t.device}"
            )
    if cos.shape != sin.shape:
        raise ValueError(f"cos and sin must have one shape, got {tuple(cos.shape)} and {tuple(sin.shape)}")
    cos, sin = cos.contiguous(), sin.contiguous()
    q_out = torch.empty(q.shape, dtype=q.dtype)
    k_out = torch.empty(k.shape, dtype=k.dtype)
    ext.qk_norm_rope(
        q.data_ptr(),
        q.stride(0),
        q.stride(1),
        k.data_ptr(),
        k.stride(0),
        k.stride(1),
        q_weight.data_ptr(),
        k_weight.data_ptr(),
        q_positions.data_ptr(),
        k_positions.data_ptr(),
        q_out.data_ptr(),
        k_out.data_ptr(),
        q.shape[0],
        q.shape[1],
        k.shape[0],
        k.shape[1],
        D,
        cos.data_ptr(),
        sin.data_ptr(),
        cos.stride(0),
        cos.shape[0],
        float(eps),
        _DTYPE_CODE[q.dtype],
        resolve_isa(isa),
        _threads(),
    )
    return q_out, k_out


# ------------------------------------------------------------------------------------------ SwiGLU
def swiglu_cpu(gate_up: torch.Tensor, *, isa: str | None = None) -> torch.Tensor:
    """C++ swiglu_torch: gate_up [..., 2I] = [gate | up] -> silu(gate) * up [..., I]."""
    _check_float("gate_up", gate_up)
    if gate_up.dim() < 1 or gate_up.shape[-1] % 2 or gate_up.shape[-1] == 0:
        raise ValueError(f"gate_up's last dim must be even and non-zero (gate | up), got {tuple(gate_up.shape)}")
    I = gate_up.shape[-1] // 2
    gu = _rows("gate_up", gate_up, 2 * I)
    return _swiglu(gu[:, :I], gu[:, I:], (*gate_up.shape[:-1], I), isa)


def swiglu_pair_cpu(gate: torch.Tensor, up: torch.Tensor, *, isa: str | None = None) -> torch.Tensor:
    """silu(gate) * up for gate and up in separate tensors of one shape [..., I]."""
    _check_float("gate", gate)
    _check_float("up", up, gate.dtype)
    if gate.shape != up.shape or gate.dim() < 1 or gate.shape[-1] == 0:
        raise ValueError(f"gate and up must have one non-empty shape, got {tuple(gate.shape)} and {tuple(up.shape)}")
    I = gate.shape[-1]
    return _swiglu(_rows("gate", gate, I), _rows("up", up, I), gate.shape, isa)


def _swiglu(g2, u2, shape, isa):
    ext = _require()
    out = torch.empty(shape, dtype=g2.dtype)
    I = g2.shape[1]
    o2 = out.view(-1, I)
    ext.swiglu(
        g2.data_ptr(),
        g2.stride(0),
        u2.data_ptr(),
        u2.stride(0),
        o2.data_ptr(),
        o2.stride(0),
        g2.shape[0],
        I,
        _DTYPE_CODE[g2.dtype],
        resolve_isa(isa),
        _threads(),
    )
    return out


# ------------------------------------------------------------------------------------------ attention
def attention_supported(q: torch.Tensor) -> bool:
    """Whether attention_cpu takes this q (dtype, head_dim); the backend falls back to torch otherwise."""
    return q.dtype in _DTYPE_CODE and q.dim() == 3 and q.shape[2] % 16 == 0 and q.shape[2] > 0


def attention_cpu(
    q,
    k,
    v,
    cu_seqlens_q,
    cu_seqlens_k,
    prefix_starts,
    prefix_lens,
    scale,
    prefix_k=None,
    prefix_v=None,
    *,
    isa: str | None = None,
):
    """C++ attention_torch (see attention.py): every sequence and head of the packed batch in one call,
    blocked online softmax in float32, the shared prefixes' keys prepared once per call."""
    ext = _require()
    _check_float("q", q)
    if q.dim() != 3:
        raise ValueError(f"q must be [tokens, heads, head_dim], got {tuple(q.shape)}")
    Tq, Hq, D = q.shape
    if D % 16 or D == 0:
        raise ValueError(f"head_dim must be a positive multiple of 16 for attention_cpu, got {D}")
    args = check_attention_inputs(q, k, v, cu_seqlens_q, cu_seqlens_k, prefix_starts, prefix_lens, prefix_k, prefix_v)
    for name, t in zip(args._fields, args):
        if isinstance(t, torch.Tensor) and t.device.type != "cpu":
            raise ValueError(f"{name} is on {t.device}; the cpu backend's ops take CPU tensors")
    q, k, v, pk, pv, cu_q, cu_k, p_start, p_len, S = args
    Hkv = k.shape[1]
    out = torch.empty(q.shape, dtype=q.dtype)
    ext.attention(
        q.data_ptr(),
        q.stride(0),
        q.stride(1),
        k.data_ptr(),
        k.stride(0),
        k.stride(1),
        v.data_ptr(),
        v.stride(0),
        v.stride(1),
        pk.data_ptr(),
        pk.stride(0),
        pk.stride(1),
        pv.data_ptr(),
        pv.stride(0),
        pv.stride(1),
        out.data_ptr(),
        out.stride(0),
        out.stride(1),
        cu_q.data_ptr(),
        cu_k.data_ptr(),
        p_start.data_ptr(),
        p_len.data_ptr(),
        S,
        Tq,
        k.shape[0],
        pk.shape[0],
        Hq,
        Hkv,
        D,
        float(scale),
        _DTYPE_CODE[q.dtype],
        resolve_isa(isa),
        _threads(),
    )
    return out


# ------------------------------------------------------------------------------------------ linear
def packing_available(dtype: torch.dtype) -> bool:
    """Whether torch's oneDNN linear with prepacked weights runs here for this dtype (bf16 only where
    oneDNN has bf16 kernels: AVX512-BF16, AMX, or the AVX-512 emulation it accepts)."""
    if dtype not in _DTYPE_CODE or not torch.backends.mkldnn.is_available():
        return False
    ops = torch.ops.mkldnn
    if not (hasattr(ops, "_linear_pointwise") and hasattr(ops, "_reorder_linear_weight")):
        return False
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return True


class PackedLinear:
    """A linear layer's weight [out, in] reordered once into oneDNN's blocked layout.

    Why: torch's F.linear in float32 runs MKL's sgemm, which on AMD CPUs takes a slower path than
    oneDNN's AVX-512 kernels (measured on the build machine's EPYC: ~200 against ~400-480 GFLOP/s), and
    in bf16 a weight packed ahead of time saves the reorder oneDNN otherwise does on every call. The
    dense weight is not kept (`dense()` rebuilds it), so packing does not double the model's memory.
    Rows are computed independently of how many share the call except below a few rows, which
    `zkernels.model.linear` pads, as it does for F.linear.
    """

    def __init__(self, weight: torch.Tensor):
        if weight.dim() != 2 or weight.device.type != "cpu" or not packing_available(weight.dtype):
            raise ValueError(f"cannot pack a {weight.dtype} weight of shape {tuple(weight.shape)} on {weight.device}")
        self.out_features, self.in_features = weight.shape
        self.dtype = weight.dtype
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), _PACK_ROWS_HINT)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.out_features, self.in_features))

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def __call__(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        if x.dtype != self.dtype or x.shape[-1] != self.in_features:
            raise ValueError(
                f"input {tuple(x.shape)} {x.dtype} does not fit a packed [{self.out_features}, "
                f"{self.in_features}] {self.dtype} weight"
            )
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), self.packed, bias, "none", [], "")

    def dense(self) -> torch.Tensor:
        """The weight as a plain [out, in] tensor (the product with the identity: exact)."""
        eye = torch.eye(self.in_features, dtype=self.dtype)
        return self(eye).t().contiguous()

    def __repr__(self) -> str:
        return f"PackedLinear({self.out_features}, {self.in_features}, {self.dtype})"


# oneDNN picks the packed layout for an expected row count; one fixed hint keeps the layout (and so the
# summation order, hence every row's value) the same however many rows a call has.
_PACK_ROWS_HINT = 512


# ------------------------------------------------------------------------------------------ allocator
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
