"""RMSNorm, optionally fused with the residual add that precedes it in every Qwen3 block.

Torch reference first; the Triton kernel (when present) must match it.
Math follows transformers' Qwen3RMSNorm: statistics in float32, the normalised value cast back to the
input dtype, then scaled by the weight.
"""
import torch


def rms_norm_torch(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    xf = x.float()
    normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * normed.to(x.dtype)


def add_rms_norm_torch(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float):
    """Returns (rms_norm(x + residual), x + residual)."""
    summed = x + residual
    return rms_norm_torch(summed, weight, eps), summed


# ---------------------------------------------------------------------------------------------------
# Triton kernel
# ---------------------------------------------------------------------------------------------------
from ._triton_util import check_float, check_out, check_same_device, require_triton, tl, triton, warps_for_row  # noqa: E402


@triton.jit
def _rms_norm_kernel(x_ptr, res_ptr, w_ptr, out_ptr, sum_ptr,
                     stride_x, stride_r, stride_o, stride_s, H, eps,
                     HAS_RESIDUAL: tl.constexpr, BLOCK: tl.constexpr):
    # One program per row: a Qwen3 hidden row (<= 8192 values) fits in registers, so the row is read
    # once, reduced, and written once (plus the summed residual when fused).
    row = tl.program_id(0).to(tl.int64)  # int64: row * stride can pass 2**31 for long batches
    cols = tl.arange(0, BLOCK)
    mask = cols < H
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        r = tl.load(res_ptr + row * stride_r + cols, mask=mask, other=0.0)
        # torch's x + residual rounds the exact sum once to the input dtype; so does this.
        x = (x.to(tl.float32) + r.to(tl.float32)).to(sum_ptr.dtype.element_ty)
        tl.store(sum_ptr + row * stride_s + cols, x, mask=mask)
    xf = x.to(tl.float32)
    rstd = tl.rsqrt(tl.sum(xf * xf, axis=0) / H + eps)
    # Reference rounding order: normalised value cast to the input dtype, then one rounded product
    # with the weight in the output dtype.
    normed = (xf * rstd).to(x.dtype).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * stride_o + cols, (normed * w).to(out_ptr.dtype.element_ty), mask=mask)


def rms_norm_launch_config(hidden: int) -> tuple[int, int]:
    """(BLOCK, num_warps) for rows of `hidden` values. The launcher and benchmarks/gpu_report.py (which
    compiles it for sm_80/89/90 and checks for spills) both call this."""
    block = triton.next_power_of_2(hidden)
    return block, warps_for_row(block)


def _as_rows(t):
    """[..., H] -> [T, H] with a contiguous last dim (a view when possible, else a copy)."""
    t2 = t.reshape(-1, t.shape[-1]) if t.dim() != 2 else t
    if t2.shape[-1] > 1 and t2.stride(-1) != 1:
        t2 = t2.contiguous()
    return t2


def _launch(x, residual, weight, eps, out, residual_out):
    require_triton()
    check_float("x", x)
    check_float("weight", weight)
    if x.dim() < 1:
        raise ValueError("x must have at least one dimension")
    H = x.shape[-1]
    if weight.dim() != 1 or weight.shape[0] != H:
        raise ValueError(f"weight must be [{H}] to match x's last dim, got {tuple(weight.shape)}")
    if residual is not None and (residual.shape != x.shape or residual.dtype != x.dtype):
        raise ValueError(f"residual must match x ({tuple(x.shape)} {x.dtype}), "
                         f"got {tuple(residual.shape)} {residual.dtype}")
    check_same_device(x=x, weight=weight, residual=residual)
    out_dtype = torch.promote_types(weight.dtype, x.dtype)  # what weight * normed gives in torch
    check_out("out", out, x.shape, out_dtype, x.device)
    check_out("residual_out", residual_out, x.shape, x.dtype, x.device)
    if out is None:
        out = torch.empty(x.shape, dtype=out_dtype, device=x.device)
    if residual is not None and residual_out is None:
        residual_out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if x.numel() == 0:
        return out, residual_out
    x2 = _as_rows(x)
    r2 = _as_rows(residual) if residual is not None else x2
    o2 = out.view(-1, H)
    s2 = residual_out.view(-1, H) if residual is not None else o2
    w = weight if weight.stride(0) == 1 else weight.contiguous()
    block, warps = rms_norm_launch_config(H)
    _rms_norm_kernel[(x2.shape[0],)](
        x2, r2, w, o2, s2, x2.stride(0), r2.stride(0), o2.stride(0), s2.stride(0), H, eps,
        HAS_RESIDUAL=residual is not None, BLOCK=block, num_warps=warps)
    return out, residual_out


def rms_norm_triton(x: torch.Tensor, weight: torch.Tensor, eps: float, *, out=None) -> torch.Tensor:
    """Triton rms_norm_torch. `out` (optional): a preallocated contiguous output buffer."""
    return _launch(x, None, weight, eps, out, None)[0]


def add_rms_norm_triton(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float, *,
                        out=None, residual_out=None):
    """Triton add_rms_norm_torch: one pass writes rms_norm(x + residual) and x + residual."""
    if residual is None:
        raise ValueError("residual must be a tensor")
    return _launch(x, residual, weight, eps, out, residual_out)


# ---------------------------------------------------------------------------------------------------
# C++ kernel (the "cpu" backend: zkernels._cpu_ops, csrc/cpu_*; see cpu_runtime.py)
# ---------------------------------------------------------------------------------------------------
from . import cpu_runtime as _cpu_runtime  # noqa: E402


def _rms_norm_cpu(x, residual, weight, eps, isa):
    ext = _cpu_runtime.extension()
    _cpu_runtime.check_float("x", x)
    if x.dim() < 1 or x.shape[-1] == 0:
        raise ValueError(f"x must have a non-empty last dim, got shape {tuple(x.shape)}")
    H = x.shape[-1]
    w = _cpu_runtime.vector("weight", weight, H, x.dtype)
    x2 = _cpu_runtime.rows_2d("x", x, H)
    out = torch.empty(x.shape, dtype=x.dtype)
    r2 = summed = s2 = None
    if residual is not None:
        _cpu_runtime.check_float("residual", residual, x.dtype)
        if residual.shape != x.shape:
            raise ValueError(f"residual has shape {tuple(residual.shape)}, x has {tuple(x.shape)}")
        r2 = _cpu_runtime.rows_2d("residual", residual, H)
        summed = torch.empty(x.shape, dtype=x.dtype)
        s2 = summed.view(-1, H)
    ext.rms_norm(x=x2, weight=w, out=out.view(-1, H), residual=r2, sum_out=s2, eps=float(eps),
                 isa=_cpu_runtime.resolve_isa(isa), threads=_cpu_runtime.threads())
    return out, summed


def rms_norm_cpu(x: torch.Tensor, weight: torch.Tensor, eps: float, *, isa: str | None = None) -> torch.Tensor:
    """C++ rms_norm_torch: weight * round(x * rsqrt(mean(x^2) + eps)), one pass per row."""
    return _rms_norm_cpu(x, None, weight, eps, isa)[0]


def add_rms_norm_cpu(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float, *,
                     isa: str | None = None):
    """C++ add_rms_norm_torch: (rms_norm(x + residual), x + residual) in one pass per row."""
    if residual is None:
        raise ValueError("residual must be a tensor")
    return _rms_norm_cpu(x, residual, weight, eps, isa)
