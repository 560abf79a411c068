"""int8 linear layers on CPU: weights quantized once to symmetric per-output-channel int8 and prepacked for
oneDNN, activations quantized per token (per row) to uint8 with zero point 128, int8 x int8 -> int32
products through `torch.ops.onednn.qlinear_pointwise`, float32 output.

Why this shape of quantization:
- uint8 activations, not int8: oneDNN's VNNI and AMX-INT8 kernels take unsigned activations; signed ones
  fall to its reference kernel, thousands of times slower. A CPU without those extensions gets an error
  (`check_int8_cpu`), never that path.
- One scale per token: qlinear_pointwise takes one activation scale per call, so the call runs with scale
  1 and each row's own scale multiplies its output row. The int32 sums do not depend on the scale, so this
  is exact, and a row's result does not depend on the rows it shares the call with (no padding needed).
- Per-token scales confine a token with huge activations (Qwen3's first token) to its own row; channels
  that are large in every token are handled by smoothing (`smoothing=`: the input scaled down per channel
  before quantization, the weight columns scaled up to match; see zkernels/quantization.py).
"""
from __future__ import annotations

from pathlib import Path

import torch

from .linear import CpuLinear

try:
    from .. import _cpu_ops as _ext
except ImportError:  # not built: the torch quantizer below does the same, slower
    _ext = None

INT8_EXTENSIONS = ("avx512_vnni", "avx_vnni", "amx_int8")
_CPUINFO = Path("/proc/cpuinfo")


def int8_isa() -> dict[str, bool]:
    """Which of the int8 dot-product extensions oneDNN's fast kernels use this CPU has."""
    if _ext is not None:
        return dict(_ext.int8_isa())
    flags: set[str] = set()
    if _CPUINFO.is_file():
        for line in _CPUINFO.read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    return {name: name in flags for name in INT8_EXTENSIONS}


def int8_unsupported_reason() -> str | None:
    """None where int8 linears run fast here, else what is missing, in words."""
    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.onednn, "qlinear_pointwise"):
        return (f"this torch build ({torch.__version__}) has no oneDNN quantized linear "
                f"(torch.ops.onednn.qlinear_pointwise)")
    isa = int8_isa()
    if not any(isa.values()):
        return ("this CPU has none of AVX512-VNNI, AVX-VNNI or AMX-INT8, which oneDNN's int8 kernels need "
                "(without them it falls back to a reference kernel thousands of times slower)")
    return None


def check_int8_cpu() -> None:
    """Raises a RuntimeError naming what is missing when int8 cannot run fast on this CPU."""
    reason = int8_unsupported_reason()
    if reason is not None:
        raise RuntimeError(f"quantize='int8' cannot run here: {reason}. Load the model without quantize "
                           f"(float32 or bfloat16) instead.")


# ------------------------------------------------------------------------------------------ quantizers
def quantize_weight(weight: torch.Tensor, smoothing: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """weight [out, in] (any float dtype; times `smoothing` [in] per input column, in float32) ->
    (int8 [out, in], float32 scale [out]) with weight ~= q * scale[:, None], symmetric, |q| <= 127."""
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or not weight.is_floating_point():
        raise ValueError(f"weight must be a 2-D float tensor, got {_describe(weight)}")
    n, k = weight.shape
    if smoothing is not None and smoothing.shape != (k,):
        raise ValueError(f"smoothing must have shape [{k}], got {tuple(smoothing.shape)}")
    q = torch.empty((n, k), dtype=torch.int8, device=weight.device)
    scale = torch.empty(n, dtype=torch.float32, device=weight.device)
    # blocks of rows, so the float32 temporaries stay small beside a weight read in bf16 (loading's peak)
    for r0 in range(0, n, _WEIGHT_BLOCK_ROWS):
        w = weight[r0:r0 + _WEIGHT_BLOCK_ROWS].float()
        if smoothing is not None:
            w = w * smoothing.float().to(w.device)[None, :]
        if not torch.isfinite(w).all():
            raise ValueError(f"weight [{n}, {k}] holds a NaN or an infinity: it cannot be quantized")
        amax = w.abs().amax(dim=1)
        s = torch.where(amax > 0, amax / 127, torch.ones_like(amax))
        q[r0:r0 + len(w)] = torch.round(w / s[:, None]).clamp_(-127, 127)
        scale[r0:r0 + len(w)] = s
    return q, scale


_WEIGHT_BLOCK_ROWS = 256


def quantize_rows_torch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference per-token quantizer: x [n, k] -> (uint8 codes [n, k], float32 scale [n]) with
    x ~= (q - 128) * scale[:, None]: scale = max|x| / 127 per row, q = rint(x * (127 / max|x|)) + 128
    (a multiplication, not a division by scale: the C++ quantizer's speed depends on it; an all-zero row
    gets scale 1 and codes 128)."""
    xf = x.float()
    if not torch.isfinite(xf).all():
        bad = int((~torch.isfinite(xf)).any(dim=1).nonzero()[0])
        raise ValueError(f"quantize_rows: row {bad} of x holds a NaN or an infinity; int8 quantization needs "
                         f"finite activations")
    amax = xf.abs().amax(dim=1)
    zero = amax == 0
    scale = torch.where(zero, torch.ones_like(amax), amax / 127)
    inv = torch.where(zero, torch.ones_like(amax), torch.full_like(amax, 127) / amax)  # 127 / amax, one rounding
    q = (torch.round(xf * inv[:, None]).clamp_(-127, 127) + 128).to(torch.uint8)
    return q, scale


def quantize_rows(x: torch.Tensor, *, isa: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """quantize_rows_torch's result (bit-identical), in one C++ pass per row where the extension is built.
    x: a float32 or bfloat16 CPU tensor [n, k]."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError(f"x must be a 2-D tensor [rows, cols], got {_describe(x)}")
    if _ext is None or x.device.type != "cpu" or x.dtype not in (torch.float32, torch.bfloat16) or x.shape[1] == 0:
        return quantize_rows_torch(x)
    if x.stride(1) != 1:
        x = x.contiguous()
    q = torch.empty(x.shape, dtype=torch.uint8)
    scale = torch.empty(x.shape[0], dtype=torch.float32)
    if x.shape[0]:
        view = x.numpy() if x.dtype == torch.float32 else x.view(torch.int16).numpy()
        _ext.quantize_rows(view, "float32" if x.dtype == torch.float32 else "bfloat16", q.numpy(), scale.numpy(),
                           isa=isa, threads=max(1, torch.get_num_threads()))
    return q, scale


def scale_rows_torch(y: torch.Tensor, s: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The reference of scale_rows: (y * s[:, None]) in float32, rounded once to dtype."""
    return (y.float() * s.float()[:, None]).to(dtype)


def scale_rows(y: torch.Tensor, s: torch.Tensor, dtype: torch.dtype, *, out: torch.Tensor | None = None,
               isa: str = "auto") -> torch.Tensor:
    """y [n, m] float32 times s [n] per row, rounded once to dtype, in one C++ pass (the multiplication and
    the rounding of separate torch ops cost two more passes over the matmul's output). Written into `out`
    (contiguous [n, m] of dtype) when given, else in place into y for float32 and into a new tensor for
    bfloat16. Bit-identical to scale_rows_torch."""
    if out is not None and (not isinstance(out, torch.Tensor) or out.shape != y.shape or out.dtype != dtype
                            or not out.is_contiguous()):
        raise ValueError(f"out must be a contiguous {dtype} tensor of shape {tuple(y.shape)}, got {_describe(out)}")
    if _ext is None or y.dtype != torch.float32 or y.dim() != 2 or dtype not in (torch.float32, torch.bfloat16):
        scaled = scale_rows_torch(y, s, dtype)
        return scaled if out is None else out.copy_(scaled)
    y, s = y.contiguous(), s.float().contiguous()
    if out is None:
        out = y if dtype == torch.float32 else torch.empty(y.shape, dtype=dtype)
    if y.shape[0] and y.shape[1]:
        view = out.numpy() if dtype == torch.float32 else out.view(torch.int16).numpy()
        _ext.scale_rows(y.numpy(), s.numpy(), view, "float32" if dtype == torch.float32 else "bfloat16", isa=isa,
                        threads=max(1, torch.get_num_threads()))
    return out


def _describe(t) -> str:
    if isinstance(t, torch.Tensor):
        return f"a {t.dtype} tensor of shape {tuple(t.shape)} on {t.device}"
    return type(t).__name__


# ------------------------------------------------------------------------------------------ the layer
class QuantizedLinear(CpuLinear):
    """A linear layer [out, in] held as prepacked int8 (1 byte a weight, plus 4 per output channel).

    Call it on float32 or bfloat16 rows [n, in]; the result [n, out] is in the input's dtype, each row
    computed from its own quantization alone (a row's value does not depend on its batch).
    `smoothing` [in], when given, was folded into the weight: the caller's activations arrive already
    divided by it (the preceding norm's weight absorbed the division).
    """

    row_invariant = True  # zkernels.model.linear needs no padding of small batches for this layer

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor):
        if not isinstance(qweight, torch.Tensor) or qweight.dtype != torch.int8 or qweight.dim() != 2:
            raise ValueError(f"qweight must be a 2-D int8 tensor, got {_describe(qweight)}")
        if not isinstance(scale, torch.Tensor) or scale.shape != (qweight.shape[0],) or not scale.is_floating_point():
            raise ValueError(f"scale must be a float tensor [{qweight.shape[0]}], got {_describe(scale)}")
        check_int8_cpu()
        self.out_features, self.in_features = qweight.shape
        self.scale = scale.float().cpu().contiguous()
        self._zero_points = torch.zeros(self.out_features, dtype=torch.int64)
        self.packed = torch.ops.onednn.qlinear_prepack(qweight.cpu().contiguous(), None)

    @classmethod
    def from_float(cls, weight: torch.Tensor, smoothing: torch.Tensor | None = None) -> QuantizedLinear:
        """Quantizes a float weight [out, in] (quantize_weight) and prepacks it."""
        return cls(*quantize_weight(weight, smoothing))

    @property
    def nbytes(self) -> int:
        """Bytes the layer holds: the int8 weight and its float32 per-channel scales."""
        return self.out_features * self.in_features + 4 * self.out_features

    def __call__(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"input must be [rows, {self.in_features}], got {_describe(x)}")
        if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"input must be a float32 or bfloat16 CPU tensor, got {_describe(x)}")
        q, s = quantize_rows(x)
        return self.matmul_quantized(q, s, x.dtype, bias)

    def matmul_quantized(self, q: torch.Tensor, s: torch.Tensor, dtype: torch.dtype = torch.float32,
                         bias: torch.Tensor | None = None) -> torch.Tensor:
        """The product for rows already quantized (uint8 codes [n, in], zero point 128; scales [n])."""
        if q.shape[0] == 0:
            return torch.zeros((0, self.out_features), dtype=dtype)
        y = self.matmul_unscaled(q)
        if bias is None and _ext is not None and dtype in (torch.float32, torch.bfloat16):
            return scale_rows(y, s, dtype)
        y.mul_(s[:, None])
        if bias is not None:
            y.add_(bias.float())
        return y if dtype == torch.float32 else y.to(dtype)

    def matmul_unscaled(self, q: torch.Tensor) -> torch.Tensor:
        """The product of uint8 codes [n, in] (zero point 128) with the weight, per-channel weight scales
        applied, per-row activation scales not: float32 [n, out], whose row r times the row's scale is the
        layer's output. For an op that applies the row scale as it reads the rows (zkernels/kernels/
        int8_row_ops.py), so the matmul's output is not read and written once more to scale it."""
        if not isinstance(q, torch.Tensor) or q.dtype != torch.uint8 or q.dim() != 2 or q.shape[1] != self.in_features:
            raise ValueError(f"codes must be a uint8 tensor [rows, {self.in_features}], got {_describe(q)}")
        if q.shape[0] == 0:
            return torch.zeros((0, self.out_features), dtype=torch.float32)
        return torch.ops.onednn.qlinear_pointwise(q, 1.0, 128, self.packed, self.scale, self._zero_points, None,
                                                  1.0, 0, torch.float32, "none", [], "")

    def dense(self) -> torch.Tensor:
        """The dequantized weight [out, in] in float32 (what the layer multiplies by, exactly)."""
        q = torch.full((self.in_features, self.in_features), 128, dtype=torch.uint8)
        q.diagonal().fill_(129)  # the identity's rows: code 129 with scale 1 is the value 1
        return self.matmul_quantized(q, torch.ones(self.in_features)).t().contiguous()

    def __repr__(self) -> str:
        return f"QuantizedLinear({self.out_features}, {self.in_features}, int8)"
