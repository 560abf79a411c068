"""fp8 linear layers on CUDA (sm_89 and newer): weights quantized once to e4m3 with one scale per output
channel, activations quantized per token (per row) to e4m3, the product accumulated in float32 by a
Triton kernel, then scaled by both scales (and the bias added) in float32 before the output rounds to the
model dtype.

The kernel's tiles are fixed (one configuration for every shape, no split-K): each output element is the
same K-ordered sum of the same tiles whatever the number of rows, so a row's result does not depend on
what shares its batch. Its numerics are tested under TRITON_INTERPRET=1 against a float64 product of the
same quantized values (`fp8_linear_reference`); `fp8_compile_config` gives what the launcher compiles, so
a static report can compile it for sm_89/sm_90 without a GPU.
"""
from __future__ import annotations

import torch

E4M3_MAX = 448.0  # the largest finite float8_e4m3fn value
BLOCK_M, BLOCK_N, BLOCK_K = 128, 128, 128
GROUP_M = 8  # programs that share a column of weight tiles run together (L2 reuse)
NUM_WARPS, NUM_STAGES = 8, 3

try:
    import triton
    import triton.language as tl
except ImportError:  # triton is the [gpu] extra; the quantizers and the reference below work without it
    triton = None


# ------------------------------------------------------------------------------------------ quantizers
def quantize_weight_fp8(weight: torch.Tensor, smoothing: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """weight [out, in] (times `smoothing` [in] per column, in float32) -> (e4m3 [out, in], float32 scale
    [out]) with weight ~= q * scale[:, None]; scale = max|row| / 448 (1 for an all-zero row)."""
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or not weight.is_floating_point():
        raise ValueError(f"weight must be a 2-D float tensor, got {type(weight).__name__}")
    w = weight.float()
    if smoothing is not None:
        if smoothing.shape != (w.shape[1],):
            raise ValueError(f"smoothing must have shape [{w.shape[1]}], got {tuple(smoothing.shape)}")
        w = w * smoothing.float().to(w.device)[None, :]
    if not torch.isfinite(w).all():
        raise ValueError(f"weight [{w.shape[0]}, {w.shape[1]}] holds a NaN or an infinity: it cannot be quantized")
    return _quantize_rows_e4m3(w)


def quantize_rows_fp8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token activation quantization: x [n, k] -> (e4m3 [n, k], float32 scale [n])."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError(f"x must be a 2-D tensor [rows, cols], got {type(x).__name__}")
    return _quantize_rows_e4m3(x.float())


def _quantize_rows_e4m3(xf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    amax = xf.abs().amax(dim=1)
    zero = amax == 0
    scale = torch.where(zero, torch.ones_like(amax), amax / E4M3_MAX)
    inv = torch.where(zero, torch.ones_like(amax), torch.full_like(amax, E4M3_MAX) / amax)
    q = (xf * inv[:, None]).clamp_(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return q, scale


def fp8_linear_reference(xq, xs, wq, ws, bias=None) -> torch.Tensor:
    """The product the kernel computes, in float64: (xq @ wq.T) * xs[:, None] * ws[None, :] + bias."""
    out = (xq.double() @ wq.double().T) * xs.double()[:, None] * ws.double()[None, :]
    return out if bias is None else out + bias.double()


# ------------------------------------------------------------------------------------------ kernel
if triton is not None:
    @triton.jit
    def _fp8_linear_kernel(x_ptr, w_ptr, xs_ptr, ws_ptr, bias_ptr, out_ptr, M, N, K, stride_xm, stride_wn,
                           stride_om, HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                           BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
        pid = tl.program_id(0)
        n_m, n_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
        group = GROUP_M * n_n
        first_m = (pid // group) * GROUP_M
        size_m = tl.minimum(n_m - first_m, GROUP_M)
        pid_m = first_m + (pid % group) % size_m
        pid_n = (pid % group) // size_m
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_k = tl.arange(0, BLOCK_K)
        m_ok, n_ok = offs_m < M, offs_n < N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            k_ok = (k0 + offs_k) < K
            a = tl.load(x_ptr + offs_m[:, None] * stride_xm + (k0 + offs_k)[None, :],
                        mask=m_ok[:, None] & k_ok[None, :], other=0.0)
            b = tl.load(w_ptr + offs_n[:, None] * stride_wn + (k0 + offs_k)[None, :],
                        mask=n_ok[:, None] & k_ok[None, :], other=0.0)
            acc = tl.dot(a, tl.trans(b), acc, out_dtype=tl.float32)
        xs = tl.load(xs_ptr + offs_m, mask=m_ok, other=0.0)
        ws = tl.load(ws_ptr + offs_n, mask=n_ok, other=0.0)
        out = acc * xs[:, None] * ws[None, :]
        if HAS_BIAS:
            out += tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0)[None, :]
        tl.store(out_ptr + offs_m[:, None] * stride_om + offs_n[None, :], out.to(out_ptr.dtype.element_ty),
                 mask=m_ok[:, None] & n_ok[None, :])


_TRITON_DTYPE = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def fp8_compile_config(out_dtype: torch.dtype = torch.bfloat16, has_bias: bool = False):
    """(signature, constexprs, options) of the launcher's kernel, for
    `triton.compile(ASTSource(fn=_fp8_linear_kernel, signature=..., constexprs=...), target=GPUTarget("cuda",
    90, 32), options=...)` (with attrs=fp8_compile_attrs(), or through compile_fp8_kernel): one configuration for
    every shape, so this is what runs on every shape."""
    signature = {"x_ptr": "*fp8e4nv", "w_ptr": "*fp8e4nv", "xs_ptr": "*fp32", "ws_ptr": "*fp32",
                 "bias_ptr": "*fp32", "out_ptr": f"*{_TRITON_DTYPE[out_dtype]}", "M": "i32", "N": "i32", "K": "i32",
                 "stride_xm": "i32", "stride_wn": "i32", "stride_om": "i32", "HAS_BIAS": "constexpr",
                 "BLOCK_M": "constexpr", "BLOCK_N": "constexpr", "BLOCK_K": "constexpr", "GROUP_M": "constexpr"}
    constexprs = {"HAS_BIAS": has_bias, "BLOCK_M": BLOCK_M, "BLOCK_N": BLOCK_N, "BLOCK_K": BLOCK_K,
                  "GROUP_M": GROUP_M}
    return signature, constexprs, {"num_warps": NUM_WARPS, "num_stages": NUM_STAGES}


# Arguments the launch specialises as multiples of 16 at the model's shapes (torch's allocations are aligned;
# Qwen3's widths and so N, K and the row strides are multiples of 16; M, the token count, is not). Without
# these an ahead-of-time compile assumes byte alignment: byte loads, no cp.async pipeline, and spills.
_DIVISIBLE_BY_16 = ("x_ptr", "w_ptr", "xs_ptr", "ws_ptr", "bias_ptr", "out_ptr", "N", "K", "stride_xm", "stride_wn",
                    "stride_om")


def fp8_compile_attrs() -> dict:
    """ASTSource attrs for fp8_compile_config: the divisibility the launch specialises on."""
    names = list(fp8_compile_config()[0])
    return {(names.index(n),): [["tt.divisibility", 16]] for n in _DIVISIBLE_BY_16}


def compile_fp8_kernel(arch: int, out_dtype: torch.dtype = torch.bfloat16, has_bias: bool = False):
    """The kernel compiled ahead of time for sm_`arch` (no GPU needed): triton's CompiledKernel, whose
    asm["cubin"] cuobjdump -res-usage reads (registers, STACK = spill bytes)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    signature, constexprs, options = fp8_compile_config(out_dtype, has_bias)
    source = ASTSource(fn=_fp8_linear_kernel, signature=signature, constexprs=constexprs, attrs=fp8_compile_attrs())
    return triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)


def fp8_matmul(xq: torch.Tensor, xs: torch.Tensor, wq: torch.Tensor, ws: torch.Tensor,
               bias: torch.Tensor | None = None, out_dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """The Triton kernel: (xq [M, K] e4m3 @ wq [N, K].T e4m3) in float32, times xs [M] and ws [N], plus
    bias [N] (float32), rounded to out_dtype. On the CPU it needs TRITON_INTERPRET=1."""
    if triton is None:
        raise RuntimeError("the fp8 kernel needs triton: pip install \"zkernels[gpu]\"")
    for name, t in (("xq", xq), ("wq", wq)):
        if t.dtype != torch.float8_e4m3fn or t.dim() != 2 or t.stride(1) != 1:
            raise ValueError(f"{name} must be a 2-D float8_e4m3fn tensor with contiguous rows, got "
                             f"{t.dtype} {tuple(t.shape)}")
    M, K = xq.shape
    N = wq.shape[0]
    if wq.shape[1] != K:
        raise ValueError(f"xq [{M}, {K}] and wq {tuple(wq.shape)} do not share K")
    if xs.shape != (M,) or ws.shape != (N,) or xs.dtype != torch.float32 or ws.dtype != torch.float32:
        raise ValueError(f"xs must be float32 [{M}] and ws float32 [{N}], got {tuple(xs.shape)} {xs.dtype} and "
                         f"{tuple(ws.shape)} {ws.dtype}")
    if bias is not None and (bias.shape != (N,) or bias.dtype != torch.float32):
        raise ValueError(f"bias must be float32 [{N}], got {tuple(bias.shape)} {bias.dtype}")
    devices = {t.device for t in (xq, xs, wq, ws) + ((bias,) if bias is not None else ())}
    if len(devices) != 1:
        raise ValueError(f"the operands are on several devices: {sorted(map(str, devices))}")
    out = torch.empty((M, N), dtype=out_dtype, device=xq.device)
    if M == 0:
        return out
    grid = (triton.cdiv(M, BLOCK_M) * triton.cdiv(N, BLOCK_N),)
    _fp8_linear_kernel[grid](xq, wq, xs.contiguous(), ws.contiguous(), bias if bias is not None else ws, out, M, N, K,
                             xq.stride(0), wq.stride(0), out.stride(0), HAS_BIAS=bias is not None,
                             BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, GROUP_M=GROUP_M,
                             num_warps=NUM_WARPS, num_stages=NUM_STAGES)
    return out


# ------------------------------------------------------------------------------------------ the layer
def check_fp8_device(device) -> None:
    """Raises unless `device` is a CUDA device of compute capability 8.9 or newer with triton installed."""
    if not str(device).startswith("cuda"):
        raise ValueError(f"quantize='fp8' runs on CUDA devices (sm_89 or newer), not {device!r}")
    if not torch.cuda.is_available():
        raise RuntimeError(f"quantize='fp8' on {device!r}: torch sees no CUDA device")
    major, minor = torch.cuda.get_device_capability(torch.device(device))
    if (major, minor) < (8, 9):
        raise RuntimeError(f"quantize='fp8' needs fp8 tensor cores (compute capability 8.9 or newer: Ada, Hopper, "
                           f"Blackwell); {device} is sm_{major}{minor}")
    if triton is None:
        raise RuntimeError("quantize='fp8' needs triton: pip install \"zkernels[gpu]\"")


class Fp8Linear:
    """A linear layer [out, in] held as e4m3 weights and float32 per-channel scales, on a CUDA device (or
    the CPU under TRITON_INTERPRET=1, for tests). Called on rows [n, in], returns [n, out] in their dtype."""

    row_invariant = True  # fixed tiles, no split-K: zkernels.model.linear needs no padding

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor):
        if qweight.dtype != torch.float8_e4m3fn or qweight.dim() != 2:
            raise ValueError(f"qweight must be a 2-D float8_e4m3fn tensor, got {qweight.dtype} {tuple(qweight.shape)}")
        if scale.shape != (qweight.shape[0],):
            raise ValueError(f"scale must have shape [{qweight.shape[0]}], got {tuple(scale.shape)}")
        self.qweight = qweight.contiguous()
        self.scale = scale.float().to(qweight.device).contiguous()
        self.out_features, self.in_features = qweight.shape

    @classmethod
    def from_float(cls, weight: torch.Tensor, smoothing: torch.Tensor | None = None) -> Fp8Linear:
        return cls(*quantize_weight_fp8(weight, smoothing))

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.out_features, self.in_features))

    @property
    def device(self) -> torch.device:
        return self.qweight.device

    @property
    def nbytes(self) -> int:
        return self.out_features * self.in_features + 4 * self.out_features

    def __call__(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"input must be [rows, {self.in_features}], got {tuple(x.shape)}")
        xq, xs = quantize_rows_fp8(x)
        return fp8_matmul(xq, xs, self.qweight, self.scale, None if bias is None else bias.float(), x.dtype)

    def __repr__(self) -> str:
        return f"Fp8Linear({self.out_features}, {self.in_features}, e4m3)"
