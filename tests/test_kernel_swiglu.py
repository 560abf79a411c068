"""Triton swiglu against the torch reference (interpreter on CPU)."""
import pytest
import torch
from _kernel_util import DEVICE, assert_close, poisoned

from zkernels.kernels.swiglu import swiglu_torch, swiglu_triton

# Both compute in fp32 and round once; fp32 exp/sigmoid may differ in the last bits, fp16 by one ulp.
TOL = {torch.float32: dict(atol=1e-6, rtol=1e-5), torch.float16: dict(atol=1e-3, rtol=2e-3)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("T,I", [(1, 16), (5, 100), (3, 1500)])  # 1500: two column blocks, ragged tail
def test_swiglu(dtype, T, I):
    gu = (torch.randn(T, 2 * I, device=DEVICE) * 4).to(dtype)
    out = poisoned((T, I), dtype)
    assert swiglu_triton(gu, out=out) is out
    assert_close(out, swiglu_torch(gu), **TOL[dtype], what="swiglu")


def test_swiglu_strided_and_3d():
    big = torch.randn(4, 300, device=DEVICE)
    gu = big[:, 10:10 + 2 * 64]  # row stride 300
    assert_close(swiglu_triton(gu), swiglu_torch(gu), atol=1e-6, rtol=1e-5)
    gu3 = torch.randn(2, 3, 48, device=DEVICE)
    assert_close(swiglu_triton(gu3), swiglu_torch(gu3), atol=1e-6, rtol=1e-5)


def test_swiglu_bad_args():
    with pytest.raises(ValueError, match="even"):
        swiglu_triton(torch.randn(2, 7, device=DEVICE))
    with pytest.raises(ValueError, match="float16"):
        swiglu_triton(torch.ones(2, 8, dtype=torch.int64, device=DEVICE))


@pytest.mark.gpu
def test_swiglu_bf16_gpu():
    gu = torch.randn(1000, 2 * 9728, device=DEVICE).to(torch.bfloat16)
    assert_close(swiglu_triton(gu), swiglu_torch(gu), atol=1e-2, rtol=1e-2)
