"""The int8 linear layer and its per-token quantizer against plain-torch / float64 references."""
import numpy as np
import pytest
import torch

from zkernels.kernels import linear_int8
from zkernels.kernels.linear_int8 import (
    QuantizedLinear,
    check_int8_cpu,
    quantize_rows,
    quantize_rows_torch,
    quantize_weight,
)

needs_int8 = pytest.mark.skipif(linear_int8.int8_unsupported_reason() is not None,
                                reason=f"int8 cannot run here: {linear_int8.int8_unsupported_reason()}")
needs_ext = pytest.mark.skipif(linear_int8._ext is None, reason="zkernels._cpu_ops is not built")


@pytest.mark.parametrize("shape", [(1, 1), (3, 17), (40, 64), (7, 300)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("isa", ["auto", "scalar"])
def test_quantize_rows_matches_the_torch_reference_bit_for_bit(shape, dtype, isa):
    g = torch.Generator().manual_seed(hash((shape, str(dtype), isa)) % 2**31)
    x = (torch.randn(shape, generator=g) * torch.rand(shape[0], 1, generator=g) * 10).to(dtype)
    x[0] = 0  # an all-zero row: scale 1, every code 128
    q, s = quantize_rows(x, isa=isa)
    q_ref, s_ref = quantize_rows_torch(x)
    assert torch.equal(q, q_ref) and torch.equal(s, s_ref)
    assert q.dtype == torch.uint8 and (q[0] == 128).all() and s[0] == 1


def test_quantize_rows_reads_strided_rows_and_reconstructs_within_half_a_step():
    x = torch.randn(9, 80)[:, 8:72]  # row stride 80, 64 columns
    q, s = quantize_rows(x)
    assert torch.equal(q, quantize_rows_torch(x.contiguous())[0])
    err = ((q.float() - 128) * s[:, None] - x).abs()
    assert (err <= s[:, None] / 2 * (1 + 1e-5)).all()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_quantize_rows_refuses_non_finite_rows(bad):
    x = torch.randn(4, 33)
    x[2, 5] = bad
    for fn in (quantize_rows, quantize_rows_torch):
        with pytest.raises(ValueError, match="row 2 of x holds a NaN or an infinity"):
            fn(x)


@needs_ext
def test_the_binding_checks_its_arguments():
    ext = linear_int8._ext
    x = np.zeros((4, 8), np.float32)
    q, s = np.zeros((4, 8), np.uint8), np.zeros(4, np.float32)
    cases = [
        (dict(x=x.astype(np.float64)), "x must be float32"),
        (dict(x=np.zeros(8, np.float32)), "x must be 2-D"),
        (dict(q=np.zeros((4, 7), np.uint8)), "q must have x's shape"),
        (dict(q=np.zeros((4, 8), np.int8)), "q must be uint8"),
        (dict(scale=np.zeros(3, np.float32)), r"scale must have shape \[rows\]"),
        (dict(x=np.zeros((4, 16), np.float32)[:, ::2]), "x's rows must be contiguous"),
        (dict(dtype="float16"), "dtype must be"),
        (dict(dtype="bfloat16"), "16-bit integer view"),
        (dict(isa="avx9"), "isa must be"),
    ]
    ro = np.zeros((4, 8), np.uint8)
    ro.setflags(write=False)
    cases.append((dict(q=ro), "q must be writable"))
    for change, message in cases:
        args = dict(x=x, dtype="float32", q=q, scale=s, isa="auto", threads=1, **{})
        args.update(change)
        with pytest.raises(ValueError, match=message):
            ext.quantize_rows(**args)


def test_quantize_weight_is_symmetric_per_output_channel():
    w = torch.randn(24, 40) * torch.logspace(-3, 1, 24)[:, None]
    w[5] = 0
    q, scale = quantize_weight(w)
    assert q.dtype == torch.int8 and q.abs().max() <= 127
    assert torch.allclose(scale[torch.arange(24) != 5], w.abs().amax(1)[torch.arange(24) != 5] / 127)
    assert (q.abs().amax(1)[torch.arange(24) != 5] == 127).all() and scale[5] == 1
    assert ((q.float() * scale[:, None] - w).abs() <= scale[:, None] / 2 * (1 + 1e-5)).all()
    s = torch.rand(40) + 0.5
    q2, scale2 = quantize_weight(w, smoothing=s)
    assert torch.equal((q2, scale2)[0], quantize_weight(w * s)[0])
    with pytest.raises(ValueError, match="smoothing must have shape"):
        quantize_weight(w, smoothing=torch.ones(39))


@needs_int8
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_quantized_linear_equals_a_float64_product_of_the_same_quantized_values(dtype):
    g = torch.Generator().manual_seed(7)
    w, x = torch.randn(48, 96, generator=g) * 0.05, torch.randn(13, 96, generator=g).to(dtype)
    bias = torch.randn(48, generator=g)
    layer = QuantizedLinear.from_float(w)
    y = layer(x, bias)
    qw, ws = quantize_weight(w)
    qx, xs = quantize_rows_torch(x)
    ref = ((qx.double() - 128) @ qw.double().T) * ws.double() * xs.double()[:, None] + bias.double()
    assert y.dtype == dtype and y.shape == (13, 48)
    tol = 1e-6 if dtype == torch.float32 else 8e-3
    assert torch.allclose(y.double(), ref, rtol=tol, atol=tol * ref.abs().max().item())
    assert torch.allclose(layer.dense(), qw.float() * ws[:, None])
    assert layer.nbytes == 48 * 96 + 4 * 48


@needs_int8
def test_a_rows_result_does_not_depend_on_its_batch():
    layer = QuantizedLinear.from_float(torch.randn(70, 128) * 0.05)
    x = torch.randn(37, 128)
    full = layer(x)
    for rows in ([0], [5, 6], list(range(3, 20)), [36]):
        assert torch.equal(layer(x[rows]), full[rows])
    assert layer(x[:0]).shape == (0, 70)


@needs_int8
def test_quantized_linear_rejects_wrong_inputs():
    layer = QuantizedLinear.from_float(torch.randn(8, 16))
    with pytest.raises(ValueError, match=r"input must be \[rows, 16\]"):
        layer(torch.randn(3, 15))
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        layer(torch.randn(3, 16).half())
    with pytest.raises(ValueError, match="qweight must be a 2-D int8 tensor"):
        QuantizedLinear(torch.zeros(4, 4), torch.ones(4))


def test_a_cpu_without_vnni_or_amx_gets_an_error_naming_them(monkeypatch):
    monkeypatch.setattr(linear_int8, "int8_isa", lambda: {n: False for n in linear_int8.INT8_EXTENSIONS})
    with pytest.raises(RuntimeError, match="AVX512-VNNI, AVX-VNNI or AMX-INT8"):
        check_int8_cpu()
    with pytest.raises(RuntimeError, match="AVX512-VNNI"):
        QuantizedLinear.from_float(torch.randn(8, 16))


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("isa", ["auto", "scalar"])
def test_scale_rows_matches_the_torch_reference_bit_for_bit(dtype, isa):
    from zkernels.kernels.linear_int8 import scale_rows, scale_rows_torch
    g = torch.Generator().manual_seed(11)
    for shape in ((1, 1), (7, 33), (64, 200)):
        y, s = torch.randn(shape, generator=g) * 300, torch.rand(shape[0], generator=g)
        expected = scale_rows_torch(y, s, dtype)
        assert torch.equal(scale_rows(y.clone(), s, dtype, isa=isa), expected)
        out = torch.full((shape[0] + 2, shape[1]), 7.0, dtype=dtype)  # rows of a larger output
        assert scale_rows(y, s, dtype, out=out[1:-1], isa=isa).data_ptr() == out[1:-1].data_ptr()
        assert torch.equal(out[1:-1], expected) and (out[0] == 7).all() and (out[-1] == 7).all()
    with pytest.raises(ValueError, match="out must be a contiguous"):
        scale_rows(torch.ones(2, 4), torch.ones(2), dtype, out=torch.empty(2, 5, dtype=dtype))
    y = torch.randn(3, 40)
    y[1, 7] = float("nan")
    assert scale_rows(y, torch.ones(3), dtype, isa=isa).isnan().sum() == 1


@needs_ext
def test_scale_rows_binding_checks_its_arguments():
    ext = linear_int8._ext
    y, s = np.zeros((4, 8), np.float32), np.ones(4, np.float32)
    for change, message in ((dict(y=y.astype(np.float64)), "y must be float32"),
                            (dict(scale=np.ones(3, np.float32)), "scale must be contiguous float32"),
                            (dict(out=np.zeros((4, 9), np.float32)), "out must have y's shape"),
                            (dict(out_dtype="bfloat16"), "16-bit integer view"),
                            (dict(out_dtype="float16"), "out_dtype must be")):
        args = dict(y=y, scale=s, out=np.zeros((4, 8), np.float32), out_dtype="float32", **{})
        args.update(change)
        with pytest.raises(ValueError, match=message):
            ext.scale_rows(**args)
