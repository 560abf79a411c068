"""SwiGLU on the fused gate/up projection output: silu(gate) * up, gate_up = [gate | up]."""
import torch
import torch.nn.functional as F


def swiglu_torch(gate_up: torch.Tensor) -> torch.Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    return (F.silu(gate.float()) * up.float()).to(gate_up.dtype)


# ---------------------------------------------------------------------------------------------------
# Triton kernel
# ---------------------------------------------------------------------------------------------------
from ._triton_util import check_float, check_out, require_triton, tl, triton  # noqa: E402

_BLOCK = 1024


def swiglu_launch_config(intermediate: int) -> tuple[int, int]:
    """(BLOCK, num_warps) for rows of `intermediate` outputs. The launcher and benchmarks/gpu_report.py
    (which compiles it for sm_80/89/90 and checks for spills) both call this."""
    return min(_BLOCK, triton.next_power_of_2(intermediate)), 4


@triton.jit
def _swiglu_kernel(gu_ptr, out_ptr, stride_gu, stride_out, I, BLOCK: tl.constexpr):
    # Grid (rows, column blocks): purely elementwise, so one read of gate and up and one write.
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < I
    base = gu_ptr + row * stride_gu
    gate = tl.load(base + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(base + I + cols, mask=mask, other=0.0).to(tl.float32)
    y = gate * tl.sigmoid(gate) * up  # silu(gate) * up in fp32, one rounding at the store
    tl.store(out_ptr + row * stride_out + cols, y.to(out_ptr.dtype.element_ty), mask=mask)


def swiglu_triton(gate_up: torch.Tensor, *, out=None) -> torch.Tensor:
    """Triton swiglu_torch: gate_up [..., 2I] -> [..., I]. `out`: optional preallocated output."""
    require_triton()
    check_float("gate_up", gate_up)
    if gate_up.dim() < 1 or gate_up.shape[-1] % 2:
        raise ValueError(f"gate_up's last dim must be even (gate | up), got {tuple(gate_up.shape)}")
    I = gate_up.shape[-1] // 2
    shape = (*gate_up.shape[:-1], I)
    check_out("out", out, shape, gate_up.dtype, gate_up.device)
    if out is None:
        out = torch.empty(shape, dtype=gate_up.dtype, device=gate_up.device)
    if out.numel() == 0:
        return out
    gu = gate_up.reshape(-1, 2 * I)
    if gu.stride(-1) != 1:
        gu = gu.contiguous()
    o = out.view(-1, I)
    block, warps = swiglu_launch_config(I)
    grid = (gu.shape[0], triton.cdiv(I, block))
    _swiglu_kernel[grid](gu, o, gu.stride(0), o.stride(0), I, BLOCK=block, num_warps=warps)
    return out


# ---------------------------------------------------------------------------------------------------
# C++ kernel (the "cpu" backend: zkernels._cpu_ops, csrc/cpu_*; see cpu_runtime.py)
# ---------------------------------------------------------------------------------------------------
from . import cpu_runtime as _cpu_runtime  # noqa: E402


def swiglu_cpu(gate_up: torch.Tensor, *, isa: str | None = None) -> torch.Tensor:
    """C++ swiglu_torch: gate_up [..., 2I] = [gate | up] -> silu(gate) * up [..., I]."""
    _cpu_runtime.check_float("gate_up", gate_up)
    if gate_up.dim() < 1 or gate_up.shape[-1] % 2 or gate_up.shape[-1] == 0:
        raise ValueError(f"gate_up's last dim must be even and non-zero (gate | up), got {tuple(gate_up.shape)}")
    I = gate_up.shape[-1] // 2
    gu = _cpu_runtime.rows_2d("gate_up", gate_up, 2 * I)
    return _swiglu_cpu(gu[:, :I], gu[:, I:], (*gate_up.shape[:-1], I), isa)


def swiglu_pair_cpu(gate: torch.Tensor, up: torch.Tensor, *, isa: str | None = None) -> torch.Tensor:
    """silu(gate) * up for gate and up in separate tensors of one shape [..., I]."""
    _cpu_runtime.check_float("gate", gate)
    _cpu_runtime.check_float("up", up, gate.dtype)
    if gate.shape != up.shape or gate.dim() < 1 or gate.shape[-1] == 0:
        raise ValueError(f"gate and up must have one non-empty shape, got {tuple(gate.shape)} and {tuple(up.shape)}")
    I = gate.shape[-1]
    return _swiglu_cpu(_cpu_runtime.rows_2d("gate", gate, I), _cpu_runtime.rows_2d("up", up, I), gate.shape, isa)


def _swiglu_cpu(g2, u2, shape, isa):
    ext = _cpu_runtime.extension()
    out = torch.empty(shape, dtype=g2.dtype)
    ext.swiglu(gate=g2, up=u2, out=out.view(-1, g2.shape[1]), isa=_cpu_runtime.resolve_isa(isa),
               threads=_cpu_runtime.threads())
    return out
