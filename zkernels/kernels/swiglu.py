"""SwiGLU on the fused gate/up projection output: silu(gate) * up, gate_up = [gate | up]."""
import torch
import torch.nn.functional as F


def swiglu_torch(gate_up: torch.Tensor) -> torch.Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    return (F.silu(gate.float()) * up.float()).to(gate_up.dtype)
