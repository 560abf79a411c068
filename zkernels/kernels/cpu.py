"""The "cpu" backend's op namespace (`cpu_ops()`, what get_ops("cpu") returns): each op's C++ kernel
where it applies, its torch reference where it does not (float16 tensors, a head_dim the attention kernel
does not take), so a model on the cpu backend runs whatever its dtype; `pack_linear`, which the
model applies to its linear weights once at load; and the int8 model's fused quantizing ops
(`rms_norm_quantize`, `swiglu_quantize`: int8_row_ops.py, float32 and bfloat16 only).

Each op's C++ wrapper lives in the op's own file, beside its torch reference and Triton kernel
(rms_norm.py, qk_norm_rope.py, swiglu.py, attention.py); the extension, its instruction-set variant and
threads in cpu_runtime.py; PackedLinear in linear.py; the malloc policy in allocator.py. Their public
names are also importable from here.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from .allocator import KEEP_MEMORY_ENV_VAR, keep_freed_memory
from .attention import attention_cpu, attention_supported, attention_torch
from .cpu_runtime import ISA_ENV_VAR, available, isa_names, resolve_isa, supported_dtype
from .int8_row_ops import rms_norm_quantize_cpu, swiglu_quantize_cpu
from .linear import PackedLinear, packing_available
from .qk_norm_rope import qk_norm_rope_cpu, qk_norm_rope_torch
from .rms_norm import add_rms_norm_cpu, add_rms_norm_torch, rms_norm_cpu, rms_norm_torch
from .swiglu import swiglu_cpu, swiglu_pair_cpu, swiglu_torch

__all__ = ["ISA_ENV_VAR", "KEEP_MEMORY_ENV_VAR", "PackedLinear", "add_rms_norm", "add_rms_norm_cpu", "attention",
           "attention_cpu", "attention_supported", "available", "cpu_ops", "isa_names", "keep_freed_memory",
           "pack_linear", "packing_available", "qk_norm_rope", "qk_norm_rope_cpu", "resolve_isa", "rms_norm",
           "rms_norm_cpu", "rms_norm_quantize_cpu", "supported_dtype", "swiglu", "swiglu_cpu", "swiglu_pair_cpu",
           "swiglu_quantize_cpu"]


def _native(*tensors) -> bool:
    return all(t.device.type == "cpu" and supported_dtype(t.dtype) for t in tensors)


def rms_norm(x, weight, eps):
    if _native(x, weight) and x.dtype == weight.dtype:
        return rms_norm_cpu(x, weight, eps)
    return rms_norm_torch(x, weight, eps)


def add_rms_norm(x, residual, weight, eps):
    if _native(x, residual, weight) and x.dtype == residual.dtype == weight.dtype:
        return add_rms_norm_cpu(x, residual, weight, eps)
    return add_rms_norm_torch(x, residual, weight, eps)


def qk_norm_rope(q, k, q_weight, k_weight, cos, sin, q_positions, k_positions, eps):
    if _native(q, k, q_weight, k_weight) and q.dtype == k.dtype == q_weight.dtype == k_weight.dtype:
        return qk_norm_rope_cpu(q, k, q_weight, k_weight, cos, sin, q_positions, k_positions, eps)
    return qk_norm_rope_torch(q, k, q_weight, k_weight, cos, sin, q_positions, k_positions, eps)


def swiglu(gate_up):
    if _native(gate_up):
        return swiglu_cpu(gate_up)
    return swiglu_torch(gate_up)


def attention(q, k, v, cu_seqlens_q, cu_seqlens_k, prefix_starts, prefix_lens, scale, prefix_k=None, prefix_v=None):
    if _native(q) and attention_supported(q):
        return attention_cpu(q, k, v, cu_seqlens_q, cu_seqlens_k, prefix_starts, prefix_lens, scale, prefix_k, prefix_v)
    return attention_torch(q, k, v, cu_seqlens_q, cu_seqlens_k, prefix_starts, prefix_lens, scale, prefix_k, prefix_v)


def pack_linear(weight: torch.Tensor):
    """The weight prepacked for oneDNN (PackedLinear) where that runs, else the weight itself."""
    if isinstance(weight, torch.Tensor) and weight.device.type == "cpu" and packing_available(weight.dtype):
        return PackedLinear(weight)
    return weight


def cpu_ops() -> SimpleNamespace:
    keep_freed_memory()  # a model is about to run here: reuse its activation memory batch to batch
    resolve_isa()  # the variant for this process, resolved before the first forward (and a bad one named)
    return SimpleNamespace(name="cpu", rms_norm=rms_norm, add_rms_norm=add_rms_norm, qk_norm_rope=qk_norm_rope,
                           swiglu=swiglu, attention=attention, pack_linear=pack_linear,
                           rms_norm_quantize=rms_norm_quantize_cpu, swiglu_quantize=swiglu_quantize_cpu)
