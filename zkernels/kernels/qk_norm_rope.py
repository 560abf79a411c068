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
