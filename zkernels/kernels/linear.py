"""Linear layers on the CPU: `PackedLinear`, a weight prepacked once for torch's oneDNN linear, and
`packing_available`, where that runs. The model packs its linear weights at load on the cpu backend
(`pack_linear` in cpu.py); `zkernels.model.linear` calls a PackedLinear as it calls F.linear."""

from __future__ import annotations

import torch

from .cpu_runtime import supported_dtype


def packing_available(dtype: torch.dtype) -> bool:
    """Whether torch's oneDNN linear with prepacked weights runs here for this dtype (bf16 only where
    oneDNN has bf16 kernels: AVX512-BF16, AMX, or the AVX-512 emulation it accepts)."""
    if not supported_dtype(dtype) or not torch.backends.mkldnn.is_available():
        return False
    ops = torch.ops.mkldnn
    if not (hasattr(ops, "_linear_pointwise") and hasattr(ops, "_reorder_linear_weight")):
        return False
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return True


class CpuLinear:
    """What the prepacked CPU linears (PackedLinear, QuantizedLinear) share: `shape` [out, in] from their
    `out_features` and `in_features`, and the cpu device."""

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.out_features, self.in_features))

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")


class PackedLinear(CpuLinear):
    """A linear layer's weight [out, in] reordered once into oneDNN's blocked layout.

    Why: torch's F.linear in float32 runs MKL's sgemm, which on AMD CPUs takes a slower path than
    oneDNN's AVX-512 kernels (measured on the build machine's EPYC: ~200 against ~400-480 GFLOP/s), and
    in bf16 a weight packed ahead of time saves the reorder oneDNN otherwise does on every call. The
    dense weight is not kept (`dense()` rebuilds it), so packing does not double the model's memory.
    Rows are computed independently of how many share the call except below a few rows, which
    `zkernels.model.linear` pads, as it does for F.linear.
    """

    def __init__(self, weight: torch.Tensor):
        if weight.dim() != 2 or weight.device.type != "cpu" or not packing_available(weight.dtype):
            raise ValueError(f"cannot pack a {weight.dtype} weight of shape {tuple(weight.shape)} on {weight.device}")
        self.out_features, self.in_features = weight.shape
        self.dtype = weight.dtype
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), _PACK_ROWS_HINT)

    def __call__(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        if x.dtype != self.dtype or x.shape[-1] != self.in_features:
            raise ValueError(
                f"input {tuple(x.shape)} {x.dtype} does not fit a packed [{self.out_features}, "
                f"{self.in_features}] {self.dtype} weight"
            )
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), self.packed, bias, "none", [], "")

    def dense(self) -> torch.Tensor:
        """The weight as a plain [out, in] tensor (the product with the identity: exact)."""
        eye = torch.eye(self.in_features, dtype=self.dtype)
        return self(eye).t().contiguous()

    def __repr__(self) -> str:
        return f"PackedLinear({self.out_features}, {self.in_features}, {self.dtype})"


# oneDNN picks the packed layout for an expected row count; one fixed hint keeps the layout (and so the
# summation order, hence every row's value) the same however many rows a call has.
_PACK_ROWS_HINT = 512
