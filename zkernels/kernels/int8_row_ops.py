"""The row ops that produce the int8 linears' inputs, with the per-token uint8 quantization fused in.

`rms_norm_quantize` is rms_norm (or, with `residual`, add_rms_norm: the sum is returned too) whose output
row is quantized as `quantize_rows` quantizes it; `swiglu_quantize` is swiglu likewise. Both can read an
int8 matmul's float32 output before its per-row activation scale (`x_scale` / `in_scale`): the value they
take is that output times its row's scale, rounded once to the model dtype, which is what the unfused path
(QuantizedLinear's scale_rows) stores. So the fused C++ op gives, bit for bit, the codes and scales of the
unfused C++ ops followed by quantize_rows, while the matmul output is read once instead of being scaled,
written in the model dtype, read by the op, written again and read by the quantizer.

Each op: a torch reference (`*_torch`, the composition of the ops' own references) and the C++ kernel
(`*_cpu`, zkernels._cpu_ops, every instruction-set variant).
"""
from __future__ import annotations

import torch

from . import cpu_runtime as _cpu_runtime
from .linear_int8 import quantize_rows_torch, scale_rows_torch
from .rms_norm import add_rms_norm_torch, rms_norm_torch
from .swiglu import swiglu_torch

_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16"}


# ------------------------------------------------------------------------------------------ references
def rms_norm_quantize_torch(x: torch.Tensor, weight: torch.Tensor, eps: float, *, residual: torch.Tensor | None = None,
                            x_scale: torch.Tensor | None = None):
    """(codes uint8 [n, H], scales float32 [n], x + residual or None): quantize_rows of rms_norm(x) (with a
    residual: of add_rms_norm(x, residual)). x_scale [n]: x is float32, taken as x * x_scale rounded to
    the residual's dtype."""
    if x_scale is not None:
        if residual is None:
            raise ValueError("x_scale (x as a float32 matmul output) needs a residual to add it to")
        x = scale_rows_torch(x, x_scale, residual.dtype)
    if residual is None:
        out, summed = rms_norm_torch(x, weight, eps), None
    else:
        out, summed = add_rms_norm_torch(x, residual, weight, eps)
    q, s = quantize_rows_torch(out)
    return q, s, summed


def swiglu_quantize_torch(gate_up: torch.Tensor, dtype: torch.dtype | None = None, *,
                          in_scale: torch.Tensor | None = None):
    """(codes uint8 [n, I], scales float32 [n]): quantize_rows of swiglu(gate_up) in dtype (default
    gate_up's). in_scale [n]: gate_up is float32, taken as gate_up * in_scale rounded to dtype."""
    dtype = dtype or gate_up.dtype
    gate_up = scale_rows_torch(gate_up, in_scale, dtype) if in_scale is not None else gate_up.to(dtype)
    return quantize_rows_torch(swiglu_torch(gate_up))


# ------------------------------------------------------------------------------------------ C++ kernels
def rms_norm_quantize_cpu(x: torch.Tensor, weight: torch.Tensor, eps: float, *, residual: torch.Tensor | None = None,
                          x_scale: torch.Tensor | None = None, isa: str | None = None):
    """The C++ rms_norm_quantize_torch, one pass over each row (plus one over its L1-resident values)."""
    ext = _cpu_runtime.extension()
    ref = x if residual is None else residual
    _cpu_runtime.check_float("residual" if residual is not None else "x", ref)
    if ref.dim() != 2 or ref.shape[1] == 0:
        raise ValueError(f"{'residual' if residual is not None else 'x'} must be 2-D [rows, hidden] with hidden > 0, "
                         f"got shape {tuple(ref.shape)}")
    n, h = ref.shape
    summed = torch.empty((n, h), dtype=ref.dtype) if residual is not None else None
    if residual is not None:
        residual = _cpu_runtime.rows_2d("residual", residual, h)
    if isinstance(x, torch.Tensor) and x.dim() == 2 and x.shape[1] == h:
        x = _cpu_runtime.rows_2d("x", x, h)
    q = torch.empty((n, h), dtype=torch.uint8)
    scale = torch.empty(n, dtype=torch.float32)
    ext.rms_norm_quantize(x=x, weight=weight.contiguous() if isinstance(weight, torch.Tensor) else weight, q_out=q,
                          scale_out=scale, residual=residual, sum_out=summed,
                          x_scale=x_scale.contiguous() if isinstance(x_scale, torch.Tensor) else x_scale,
                          eps=float(eps), isa=_cpu_runtime.resolve_isa(isa), threads=_cpu_runtime.threads())
    return q, scale, summed


def swiglu_quantize_cpu(gate_up: torch.Tensor, dtype: torch.dtype | None = None, *,
                        in_scale: torch.Tensor | None = None, out: tuple[torch.Tensor, torch.Tensor] | None = None,
                        isa: str | None = None):
    """The C++ swiglu_quantize_torch: gate_up [n, 2I] = [gate | up] -> (codes [n, I], scales [n]), written
    into `out` (contiguous uint8 [n, I], float32 [n]) when given."""
    ext = _cpu_runtime.extension()
    _cpu_runtime.check_float("gate_up", gate_up)
    if gate_up.dim() != 2 or gate_up.shape[1] % 2 or gate_up.shape[1] == 0:
        raise ValueError(f"gate_up must be 2-D [rows, 2I] with an even, non-zero last dim, got {tuple(gate_up.shape)}")
    dtype = dtype or gate_up.dtype
    if dtype not in _DTYPE_NAMES:
        raise ValueError(f"dtype must be torch.float32 or torch.bfloat16, got {dtype}")
    n, i = gate_up.shape[0], gate_up.shape[1] // 2
    gu = _cpu_runtime.rows_2d("gate_up", gate_up, 2 * i)
    q, scale = out if out is not None else (torch.empty((n, i), dtype=torch.uint8), torch.empty(n, dtype=torch.float32))
    ext.swiglu_quantize(gate=gu[:, :i], up=gu[:, i:], q_out=q, scale_out=scale,
                        in_scale=in_scale.contiguous() if isinstance(in_scale, torch.Tensor) else in_scale,
                        dtype=_DTYPE_NAMES[dtype], isa=_cpu_runtime.resolve_isa(isa), threads=_cpu_runtime.threads())
    return q, scale
