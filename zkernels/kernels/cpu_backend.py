"""The "cpu" backend's op namespace: the C++ kernels of cpu.py where they apply, the torch references
where they do not (float16 tensors, a head_dim the attention kernel does not take), so a model on the
cpu backend runs whatever its dtype; and `pack_linear`, which the model applies to its linear weights
once at load.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from . import cpu
from .attention import attention_torch
from .qk_norm_rope import qk_norm_rope_torch
from .rms_norm import add_rms_norm_torch, rms_norm_torch
from .swiglu import swiglu_torch


def _native(*tensors) -> bool:
    return all(t.device.type == "cpu" and cpu.supported_dtype(t.dtype) for t in tensors)


def rms_norm(x, weight, eps):
    if _native(x, weight) and x.dtype == weight.dtype:
        return cpu.rms_norm_cpu(x, weight, eps)
    return rms_norm_torch(x, weight, eps)


def add_rms_norm(x, residual, weight, eps):
    if _native(x, residual, weight) and x.dtype == residual.dtype == weight.dtype:
        return cpu.add_rms_norm_cpu(x, residual, weight, eps)
    return add_rms_norm_torch(x, residual, weight, eps)


def qk_norm_rope(q, k, q_weight, k_weight, cos, sin, q_positions, k_positions, eps):
    if _native(q, k, q_weight, k_weight) and q.dtype == k.dtype == q_weight.dtype == k_weight.dtype:
        return cpu.qk_norm_rope_cpu(q, k, q_weight, k_weight, cos, sin, q_positions, k_positions, eps)
    return qk_norm_rope_torch(q, k, q_weight, k_weight, cos, sin, q_positions, k_positions, eps)


def swiglu(gate_up):
    if _native(gate_up):
        return cpu.swiglu_cpu(gate_up)
    return swiglu_torch(gate_up)


def attention(q, k, v, cu_seqlens_q, cu_seqlens_k, prefix_starts, prefix_lens, scale, prefix_k=None, prefix_v=None):
    if _native(q) and cpu.attention_supported(q):
        return cpu.attention_cpu(
            q, k, v, cu_seqlens_q, cu_seqlens_k, prefix_starts, prefix_lens, scale, prefix_k, prefix_v
        )
    return attention_torch(q, k, v, cu_seqlens_q, cu_seqlens_k, prefix_starts, prefix_lens, scale, prefix_k, prefix_v)


def pack_linear(weight: torch.Tensor):
    """The weight prepacked for oneDNN (cpu.PackedLinear) where that runs, else the weight itself."""
    if isinstance(weight, torch.Tensor) and weight.device.type == "cpu" and cpu.packing_available(weight.dtype):
        return cpu.PackedLinear(weight)
    return weight


def cpu_ops() -> SimpleNamespace:
    cpu.keep_freed_memory()  # a model is about to run here: reuse its activation memory batch to batch
    return SimpleNamespace(
        name="cpu",
        rms_norm=rms_norm,
        add_rms_norm=add_rms_norm,
        qk_norm_rope=qk_norm_rope,
        swiglu=swiglu,
        attention=attention,
        pack_linear=pack_linear,
    )
