"""The fp8 linear kernel (interpreter on CPU) against a float64 product of the same quantized values, and
its quantizers, batch invariance, argument checks and device checks."""
import pytest
import torch
from _kernel_util import DEVICE

pytest.importorskip("triton")
from zkernels.kernels.fp8_linear import (  # noqa: E402
    BLOCK_K,
    BLOCK_M,
    BLOCK_N,
    E4M3_MAX,
    Fp8Linear,
    check_fp8_device,
    fp8_linear_reference,
    fp8_matmul,
    quantize_rows_fp8,
    quantize_weight_fp8,
)


def _operands(M, N, K, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, K, generator=g) * torch.rand(M, 1, generator=g) * 8
    w = torch.randn(N, K, generator=g) * 0.05
    xq, xs = quantize_rows_fp8(x)
    wq, ws = quantize_weight_fp8(w)
    return [t.to(DEVICE) for t in (xq, xs, wq, ws)]


@pytest.mark.parametrize("M,N,K", [(1, 8, 16), (70, 130, 200), (BLOCK_M + 3, BLOCK_N, 2 * BLOCK_K + 5)])
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.float16])
def test_fp8_matmul_equals_float64_product_of_the_quantized_values(M, N, K, out_dtype):
    xq, xs, wq, ws = _operands(M, N, K)
    bias = torch.randn(N, device=DEVICE)
    out = fp8_matmul(xq, xs, wq, ws, bias, out_dtype=out_dtype)
    ref = fp8_linear_reference(xq, xs, wq, ws, bias)
    assert out.dtype == out_dtype and out.shape == (M, N) and torch.isfinite(out).all()
    # float32 accumulation of exact fp8 products; the output then rounds once to out_dtype
    tol = 1e-5 if out_dtype == torch.float32 else 1e-3
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol * ref.abs().max().item())


def test_a_rows_result_does_not_depend_on_its_batch():
    xq, xs, wq, ws = _operands(BLOCK_M + 9, 40, 96, seed=3)
    full = fp8_matmul(xq, xs, wq, ws, out_dtype=torch.float32)
    for rows in ([0], [5, 6, 7], list(range(BLOCK_M - 2, BLOCK_M + 9))):
        assert torch.equal(fp8_matmul(xq[rows], xs[rows], wq, ws, out_dtype=torch.float32), full[rows])


def test_quantizers_scale_per_row_and_reconstruct_closely():
    x = torch.randn(6, 50) * torch.logspace(-2, 2, 6)[:, None]
    x[2] = 0
    q, s = quantize_rows_fp8(x)
    assert q.dtype == torch.float8_e4m3fn and s[2] == 1 and (q[2].float() == 0).all()
    assert q.float().abs().amax(1)[[0, 1, 3, 4, 5]].eq(E4M3_MAX).all()
    rel = ((q.float() * s[:, None] - x).abs() / x.abs().amax(1, keepdim=True).clamp_min(1e-30))[[0, 1, 3, 4, 5]]
    assert rel.max() <= 2 ** -4  # e4m3 keeps 3 mantissa bits: half an ulp is at most 1/16 of the value
    w = torch.randn(5, 50)
    s_col = torch.rand(50) + 0.5
    assert torch.equal(quantize_weight_fp8(w, s_col)[0].float(), quantize_weight_fp8(w * s_col)[0].float())
    with pytest.raises(ValueError, match="NaN or an infinity"):
        quantize_weight_fp8(torch.full((2, 2), float("nan")))


def test_fp8_layer_and_argument_checks():
    w = torch.randn(24, 32) * 0.1
    layer = Fp8Linear.from_float(w.to(DEVICE))
    x = torch.randn(5, 32, device=DEVICE)
    y = layer(x)
    assert y.shape == (5, 24) and y.dtype == torch.float32 and layer.nbytes == 24 * 32 + 4 * 24
    torch.testing.assert_close(y, x @ w.to(DEVICE).T, rtol=0.1, atol=0.1 * (x @ w.to(DEVICE).T).abs().max().item())
    xq, xs, wq, ws = _operands(4, 8, 16)
    with pytest.raises(ValueError, match="do not share K"):
        fp8_matmul(xq, xs, wq[:, :8].contiguous(), ws)
    with pytest.raises(ValueError, match="float8_e4m3fn"):
        fp8_matmul(xq.float(), xs, wq, ws)
    with pytest.raises(ValueError, match="xs must be float32"):
        fp8_matmul(xq, xs[:3], wq, ws)
    with pytest.raises(ValueError, match=r"input must be \[rows, 32\]"):
        layer(torch.randn(2, 31, device=DEVICE))


def test_fp8_needs_a_recent_cuda_device():
    with pytest.raises(ValueError, match="runs on CUDA devices"):
        check_fp8_device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            check_fp8_device("cuda")
