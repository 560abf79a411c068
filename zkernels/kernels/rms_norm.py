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
