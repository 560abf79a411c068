"""Triton rms_norm / add_rms_norm against the torch references (interpreter on CPU)."""
import pytest
import torch
from _kernel_util import DEVICE, assert_close, poisoned

from zkernels.kernels.rms_norm import add_rms_norm_torch, add_rms_norm_triton, rms_norm_torch, rms_norm_triton

# fp16: the normalised value and the weighted product are each rounded once; a last-bit difference in
# rsqrt can move either by one ulp (2**-10 relative).
TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float16: dict(atol=2e-3, rtol=4e-3)}


def _inputs(T, H, dtype, scale=3.0):
    x = (torch.randn(T, H, device=DEVICE) * scale).to(dtype)
    w = (1.0 + 0.5 * torch.randn(H, device=DEVICE)).to(dtype)
    return x, w


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("T,H", [(1, 32), (5, 96), (9, 256)])  # 96: not a power of two (masked tail)
def test_rms_norm(dtype, T, H):
    x, w = _inputs(T, H, dtype)
    out = poisoned((T, H), dtype)
    got = rms_norm_triton(x, w, 1e-6, out=out)
    assert got is out
    assert_close(out, rms_norm_torch(x, w, 1e-6), **TOL[dtype], what="rms_norm")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("T,H", [(1, 32), (7, 80), (4, 128)])
def test_add_rms_norm(dtype, T, H):
    x, w = _inputs(T, H, dtype)
    res = (torch.randn(T, H, device=DEVICE) * 10).to(dtype)
    out, res_out = poisoned((T, H), dtype), poisoned((T, H), dtype)
    normed, summed = add_rms_norm_triton(x, res, w, 1e-6, out=out, residual_out=res_out)
    assert normed is out and summed is res_out
    ref_normed, ref_summed = add_rms_norm_torch(x, res, w, 1e-6)
    # The sum is one rounding of the exact sum in both: it must be bit-equal.
    assert torch.equal(summed, ref_summed)
    assert_close(normed, ref_normed, **TOL[dtype], what="add_rms_norm")


def test_rms_norm_strided_rows_and_3d():
    # A row-strided view (e.g. a slice of a wider buffer) and a [T, H, D] input normalised per head.
    big = torch.randn(6, 200, device=DEVICE)
    x = big[:, 8:72]
    w = torch.randn(64, device=DEVICE)
    assert_close(rms_norm_triton(x, w, 1e-6), rms_norm_torch(x, w, 1e-6), atol=1e-5, rtol=1e-5)
    x3 = torch.randn(3, 4, 32, device=DEVICE)
    w3 = torch.randn(32, device=DEVICE)
    assert_close(rms_norm_triton(x3, w3, 1e-6), rms_norm_torch(x3, w3, 1e-6), atol=1e-5, rtol=1e-5)


def test_rms_norm_mixed_dtype_weight():
    # fp32 weight on fp16 activations: torch promotes the product to fp32; so must the kernel.
    x, _ = _inputs(3, 64, torch.float16)
    w = torch.randn(64, device=DEVICE)
    got, ref = rms_norm_triton(x, w, 1e-5), rms_norm_torch(x, w, 1e-5)
    assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_rms_norm_bad_args():
    x = torch.randn(2, 64, device=DEVICE)
    with pytest.raises(ValueError, match="weight"):
        rms_norm_triton(x, torch.randn(32, device=DEVICE), 1e-6)
    with pytest.raises(ValueError, match="float16"):
        rms_norm_triton(x.to(torch.int32), torch.randn(64, device=DEVICE), 1e-6)
    with pytest.raises(ValueError, match="residual"):
        add_rms_norm_triton(x, torch.randn(3, 64, device=DEVICE), torch.randn(64, device=DEVICE), 1e-6)
    with pytest.raises(ValueError, match="out"):
        rms_norm_triton(x, torch.randn(64, device=DEVICE), 1e-6, out=torch.empty(2, 63, device=DEVICE))


@pytest.mark.gpu
@pytest.mark.parametrize("H", [2048, 2560, 4096])
def test_rms_norm_bf16_gpu(H):
    x, w = _inputs(300, H, torch.bfloat16)
    res = torch.randn(300, H, device=DEVICE).to(torch.bfloat16)
    normed, summed = add_rms_norm_triton(x, res, w, 1e-6)
    ref_normed, ref_summed = add_rms_norm_torch(x, res, w, 1e-6)
    assert torch.equal(summed, ref_summed)
    assert_close(normed, ref_normed, atol=2e-2, rtol=2e-2)
