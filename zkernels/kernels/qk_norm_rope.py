"""Qwen3's per-head RMSNorm of q and k followed by rotary position embedding (rotate-half form).

Inputs may be strided views into the fused QKV projection output; outputs are contiguous
[tokens, heads, head_dim], the layout the attention op reads.
"""
import torch

from .rms_norm import rms_norm_torch


def rope_tables(head_dim: int, theta: float, max_positions: int, device=None):
    """cos/sin tables [max_positions, head_dim // 2] in float32 (as transformers computes them)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim))
    freqs = torch.arange(max_positions, dtype=torch.float32, device=device)[:, None] * inv_freq[None, :]
    return freqs.cos(), freqs.sin()


def head_norm_rope_torch(x, weight, cos, sin, positions, eps):
    normed = rms_norm_torch(x, weight, eps).float()
    c = cos[positions][:, None, :]
    s = sin[positions][:, None, :]
    x1, x2 = normed.chunk(2, dim=-1)
    return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1).to(x.dtype)


def qk_norm_rope_torch(q, k, q_weight, k_weight, cos, sin, q_positions, k_positions, eps):
    """q [Tq, Hq, D], k [Tk, Hkv, D]; positions int tensors [Tq] / [Tk]. Returns (q_out, k_out)."""
    return (head_norm_rope_torch(q, q_weight, cos, sin, q_positions, eps),
            head_norm_rope_torch(k, k_weight, cos, sin, k_positions, eps))


# ---------------------------------------------------------------------------------------------------
# Triton kernel
# ---------------------------------------------------------------------------------------------------
from ._triton_util import check_float, check_out, check_same_device, is_pow2, require_triton, tl, triton  # noqa: E402,E501


@triton.jit
def _norm_rope_row(x_ptr, out_ptr, w_ptr, cos_ptr, sin_ptr, pos_ptr, t, stride_t, stride_h, stride_cos,
                   H, eps, HALF: tl.constexpr, BLOCK_H: tl.constexpr, W_ROUND: tl.constexpr):
    """All heads of one token: per-head RMSNorm, weight, rotate-half RoPE, contiguous store.

    The head vector is handled as its two rotary halves [BLOCK_H, HALF] so the rotation needs no
    register shuffles: out1 = x1*cos - x2*sin, out2 = x2*cos + x1*sin.
    """
    t = t.to(tl.int64)
    heads = tl.arange(0, BLOCK_H)[:, None]
    cols = tl.arange(0, HALF)[None, :]
    mask = (heads < H) & (cols < HALF)
    src = x_ptr + t * stride_t + heads * stride_h + cols
    x1 = tl.load(src, mask=mask, other=0.0)
    x2 = tl.load(src + HALF, mask=mask, other=0.0)
    x1f, x2f = x1.to(tl.float32), x2.to(tl.float32)
    ss = tl.sum(x1f * x1f, axis=1) + tl.sum(x2f * x2f, axis=1)
    rstd = tl.rsqrt(ss / (2 * HALF) + eps)[:, None]
    # Reference rounding: normalised value cast to the input dtype, times the weight rounded to the
    # promoted dtype (W_ROUND: that is the input dtype), then RoPE in fp32, one final cast.
    n1 = (x1f * rstd).to(x1.dtype).to(tl.float32) * tl.load(w_ptr + cols).to(tl.float32)
    n2 = (x2f * rstd).to(x1.dtype).to(tl.float32) * tl.load(w_ptr + HALF + cols).to(tl.float32)
    if W_ROUND:
        n1 = n1.to(x1.dtype).to(tl.float32)
        n2 = n2.to(x1.dtype).to(tl.float32)
    pos = tl.load(pos_ptr + t).to(tl.int64)
    c = tl.load(cos_ptr + pos * stride_cos + cols)
    s = tl.load(sin_ptr + pos * stride_cos + cols)
    dst = out_ptr + t * (H * 2 * HALF) + heads * (2 * HALF) + cols
    out_ty = out_ptr.dtype.element_ty
    tl.store(dst, (n1 * c - n2 * s).to(out_ty), mask=mask)
    tl.store(dst + HALF, (n2 * c + n1 * s).to(out_ty), mask=mask)


@triton.jit
def _qk_norm_rope_kernel(q_ptr, k_ptr, qo_ptr, ko_ptr, qw_ptr, kw_ptr, cos_ptr, sin_ptr, qpos_ptr, kpos_ptr,
                         Tq, Hq, Hk, sq_t, sq_h, sk_t, sk_h, stride_cos, eps,
                         HALF: tl.constexpr, BLOCK_HQ: tl.constexpr, BLOCK_HK: tl.constexpr,
                         QW_ROUND: tl.constexpr, KW_ROUND: tl.constexpr):
    # One launch for q and k: programs [0, Tq) take q's tokens, the rest take k's.
    pid = tl.program_id(0)
    if pid < Tq:
        _norm_rope_row(q_ptr, qo_ptr, qw_ptr, cos_ptr, sin_ptr, qpos_ptr, pid, sq_t, sq_h, stride_cos,
                       Hq, eps, HALF, BLOCK_HQ, QW_ROUND)
    else:
        _norm_rope_row(k_ptr, ko_ptr, kw_ptr, cos_ptr, sin_ptr, kpos_ptr, pid - Tq, sk_t, sk_h, stride_cos,
                       Hk, eps, HALF, BLOCK_HK, KW_ROUND)


def qk_norm_rope_launch_config(n_q_heads: int, n_kv_heads: int, head_dim: int) -> tuple[int, int, int]:
    """(BLOCK_HQ, BLOCK_HK, num_warps): every head of a token in one program. The launcher and
    benchmarks/gpu_report.py (which compiles it for sm_80/89/90 and checks for spills) both call this."""
    block_hq, block_hk = triton.next_power_of_2(max(n_q_heads, 1)), triton.next_power_of_2(max(n_kv_heads, 1))
    return block_hq, block_hk, 4 if block_hq * head_dim >= 2048 else 2


def _check_side(name, x, w, pos):
    check_float(name, x)
    check_float(f"{name}_weight", w)
    if x.dim() != 3:
        raise ValueError(f"{name} must be [tokens, heads, head_dim], got {tuple(x.shape)}")
    D = x.shape[2]
    if not is_pow2(D) or not 16 <= D <= 256:
        raise ValueError(f"head_dim must be a power of two in 16..256, got {D}")
    if w.dim() != 1 or w.shape[0] != D:
        raise ValueError(f"{name}_weight must be [{D}], got {tuple(w.shape)}")
    if pos.dim() != 1 or pos.shape[0] != x.shape[0]:
        raise ValueError(f"{name}_positions must be [{x.shape[0]}], got {tuple(pos.shape)}")
    if pos.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"{name}_positions must be int32 or int64, got {pos.dtype}")
    # The kernel needs a contiguous head vector; row and head strides are free (views into qkv).
    if x.stride(2) != 1:
        x = x.contiguous()
    return x, w.contiguous(), pos.contiguous()


def qk_norm_rope_triton(q, k, q_weight, k_weight, cos, sin, q_positions, k_positions, eps, *,
                        q_out=None, k_out=None):
    """Triton qk_norm_rope_torch. q [Tq, Hq, D] and k [Tk, Hkv, D] may be strided views (last dim
    contiguous); returns contiguous (q_out, k_out). Positions are not range-checked (that would need a
    device sync): they must index rows of cos/sin."""
    require_triton()
    q, q_weight, q_positions = _check_side("q", q, q_weight, q_positions)
    k, k_weight, k_positions = _check_side("k", k, k_weight, k_positions)
    D = q.shape[2]
    if k.shape[2] != D or k.dtype != q.dtype:
        raise ValueError(f"q and k must share head_dim and dtype, got {tuple(q.shape)} {q.dtype} "
                         f"and {tuple(k.shape)} {k.dtype}")
    if cos.shape != sin.shape or cos.dim() != 2 or cos.shape[1] != D // 2:
        raise ValueError(f"cos/sin must both be [max_positions, {D // 2}], got {tuple(cos.shape)} "
                         f"and {tuple(sin.shape)}")
    check_same_device(q=q, k=k, q_weight=q_weight, k_weight=k_weight, cos=cos, sin=sin,
                      q_positions=q_positions, k_positions=k_positions)
    cos = cos.float().contiguous()
    sin = sin.float().contiguous()
    check_out("q_out", q_out, q.shape, q.dtype, q.device)
    check_out("k_out", k_out, k.shape, k.dtype, k.device)
    q_out = torch.empty(q.shape, dtype=q.dtype, device=q.device) if q_out is None else q_out
    k_out = torch.empty(k.shape, dtype=k.dtype, device=k.device) if k_out is None else k_out
    Tq, Hq, Tk, Hk = q.shape[0], q.shape[1], k.shape[0], k.shape[1]
    if Tq + Tk == 0:
        return q_out, k_out
    block_hq, block_hk, warps = qk_norm_rope_launch_config(Hq, Hk, D)
    _qk_norm_rope_kernel[(Tq + Tk,)](
        q, k, q_out, k_out, q_weight, k_weight, cos, sin, q_positions, k_positions,
        Tq, Hq, Hk, q.stride(0), q.stride(1), k.stride(0), k.stride(1), cos.stride(0), eps,
        HALF=D // 2, BLOCK_HQ=block_hq, BLOCK_HK=block_hk,
        QW_ROUND=torch.promote_types(q_weight.dtype, q.dtype) == q.dtype,
        KW_ROUND=torch.promote_types(k_weight.dtype, k.dtype) == k.dtype,
        num_warps=warps)
    return q_out, k_out


# ---------------------------------------------------------------------------------------------------
# C++ kernel (the "cpu" backend: zkernels._cpu_ops, csrc/cpu_*; see cpu_runtime.py)
# ---------------------------------------------------------------------------------------------------
from . import cpu_runtime as _cpu_runtime  # noqa: E402


def _head_side_cpu(name, x, w, pos, dtype):
    _cpu_runtime.check_float(name, x, dtype)
    if x.dim() != 3:
        raise ValueError(f"{name} must be [tokens, heads, head_dim], got shape {tuple(x.shape)}")
    if x.stride(2) != 1:
        x = x.contiguous()
    w = _cpu_runtime.vector(f"{name}_weight", w, x.shape[2], dtype)
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
    ext = _cpu_runtime.extension()
    _cpu_runtime.check_float("q", q)
    q, q_weight, q_positions = _head_side_cpu("q", q, q_weight, q_positions, q.dtype)
    k, k_weight, k_positions = _head_side_cpu("k", k, k_weight, k_positions, q.dtype)
    D = q.shape[2]
    if k.shape[2] != D or D % 2:
        raise ValueError(f"q and k must share an even head_dim, got {tuple(q.shape)} and {tuple(k.shape)}")
    for name, t in (("cos", cos), ("sin", sin)):
        if (not isinstance(t, torch.Tensor) or t.dtype != torch.float32 or t.device.type != "cpu" or t.dim() != 2
                or t.shape[1] != D // 2):
            raise ValueError(f"{name} must be a float32 CPU tensor [max_positions, {D // 2}], got "
                             f"{tuple(t.shape)} {t.dtype} on {t.device}")
    if cos.shape != sin.shape:
        raise ValueError(f"cos and sin must have one shape, got {tuple(cos.shape)} and {tuple(sin.shape)}")
    q_out = torch.empty(q.shape, dtype=q.dtype)
    k_out = torch.empty(k.shape, dtype=k.dtype)
    ext.qk_norm_rope(q=q, k=k, q_weight=q_weight, k_weight=k_weight, q_positions=q_positions,
                     k_positions=k_positions, cos=cos.contiguous(), sin=sin.contiguous(), q_out=q_out, k_out=k_out,
                     eps=float(eps), isa=_cpu_runtime.resolve_isa(isa), threads=_cpu_runtime.threads())
    return q_out, k_out
