"""The fused quantizing row ops (rms_norm_quantize, swiglu_quantize) against the unfused C++ ops followed by
quantize_rows (bit for bit, every instruction-set variant) and against their plain-torch references."""
import pytest
import torch

from zkernels.kernels import cpu_runtime
from zkernels.kernels.int8_row_ops import (
    rms_norm_quantize_cpu,
    rms_norm_quantize_torch,
    swiglu_quantize_cpu,
    swiglu_quantize_torch,
)
from zkernels.kernels.linear_int8 import quantize_rows, scale_rows
from zkernels.kernels.rms_norm import add_rms_norm_cpu, rms_norm_cpu
from zkernels.kernels.swiglu import swiglu_cpu

pytestmark = pytest.mark.skipif(not cpu_runtime.available(), reason="zkernels._cpu_ops is not built")

ISAS = cpu_runtime.isa_names() if cpu_runtime.available() else []
SHAPES = [(1, 1), (6, 33), (5, 256), (3, 1031)]  # odd widths: every vector tail
DTYPES = [torch.float32, torch.bfloat16]
EPS = 1e-6


def _inputs(shape, dtype, seed):
    """x (with a zero row and rows of very different sizes), residual, weight, a float32 matmul-like output
    y and its row scales."""
    g = torch.Generator().manual_seed(seed)
    n, h = shape
    x = (torch.randn(n, h, generator=g) * torch.rand(n, 1, generator=g) * 8).to(dtype)
    res = torch.randn(n, h, generator=g).to(dtype)
    x[0], res[0] = 0, 0  # a row of zeros through both: codes 128, scale 1
    w = (torch.randn(h, generator=g) + 1).to(dtype)
    y = torch.randn(n, h, generator=g) * 300
    y_scale = torch.rand(n, generator=g) * 0.01 + 1e-4
    return x, res, w, y, y_scale


def _assert_same(got, want):
    for a, b in zip(got, want):
        assert (a is None) == (b is None)
        if a is not None:
            assert a.dtype == b.dtype and torch.equal(a, b)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_rms_norm_quantize_is_the_unfused_ops_then_quantize_rows(shape, dtype, isa):
    x, res, w, y, y_scale = _inputs(shape, dtype, hash((shape, str(dtype), isa)) % 2**31)
    # rms_norm, then quantize_rows
    _assert_same(rms_norm_quantize_cpu(x, w, EPS, isa=isa), (*quantize_rows(rms_norm_cpu(x, w, EPS, isa=isa)), None))
    # add + rms_norm
    out, summed = add_rms_norm_cpu(x, res, w, EPS, isa=isa)
    _assert_same(rms_norm_quantize_cpu(x, w, EPS, residual=res, isa=isa), (*quantize_rows(out), summed))
    # add + rms_norm reading a float32 matmul output with its row scales (scale_rows first)
    out, summed = add_rms_norm_cpu(scale_rows(y.clone(), y_scale, dtype), res, w, EPS, isa=isa)
    _assert_same(rms_norm_quantize_cpu(y, w, EPS, residual=res, x_scale=y_scale, isa=isa),
                 (*quantize_rows(out), summed))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_swiglu_quantize_is_swiglu_then_quantize_rows(shape, dtype, isa):
    n, i = shape
    g = torch.Generator().manual_seed(hash((shape, str(dtype), isa)) % 2**31)
    gate_up = torch.randn(n, 2 * i, generator=g) * 4
    gate_up[0] = 0
    y_scale = torch.rand(n, generator=g) + 0.01
    gu = gate_up.to(dtype)
    _assert_same(swiglu_quantize_cpu(gu, isa=isa), quantize_rows(swiglu_cpu(gu, isa=isa)))
    _assert_same(swiglu_quantize_cpu(gate_up, dtype, in_scale=y_scale, isa=isa),
                 quantize_rows(swiglu_cpu(scale_rows(gate_up.clone(), y_scale, dtype), isa=isa)))
    q, s = swiglu_quantize_cpu(gu, isa=isa)
    assert (q[0] == 128).all() and s[0] == 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_fused_ops_agree_with_their_torch_references(dtype):
    """The C++ norm and SwiGLU round like torch up to their last bit, so a code may move by one step."""
    x, res, w, y, y_scale = _inputs((8, 200), dtype, 7)
    q, s, summed = rms_norm_quantize_cpu(y, w, EPS, residual=res, x_scale=y_scale)
    q_ref, s_ref, summed_ref = rms_norm_quantize_torch(y, w, EPS, residual=res, x_scale=y_scale)
    assert torch.equal(summed, summed_ref)
    assert (q.int() - q_ref.int()).abs().max() <= 1
    torch.testing.assert_close(s, s_ref, rtol=1e-2 if dtype == torch.bfloat16 else 1e-5, atol=0)
    q, s, none = rms_norm_quantize_cpu(x, w, EPS)
    q_ref, s_ref, _ = rms_norm_quantize_torch(x, w, EPS)
    assert none is None and (q.int() - q_ref.int()).abs().max() <= 1
    gate_up = torch.randn(8, 400) * 3
    q, s = swiglu_quantize_cpu(gate_up, dtype, in_scale=y_scale)
    q_ref, s_ref = swiglu_quantize_torch(gate_up, dtype, in_scale=y_scale)
    assert (q.int() - q_ref.int()).abs().max() <= 1
    torch.testing.assert_close(s, s_ref, rtol=1e-2 if dtype == torch.bfloat16 else 1e-5, atol=0)


def test_zero_rows_and_written_into_given_outputs():
    w = torch.ones(16)
    q, s, summed = rms_norm_quantize_cpu(torch.zeros(0, 16), w, EPS, residual=torch.zeros(0, 16))
    assert q.shape == (0, 16) and s.shape == (0,) and summed.shape == (0, 16)
    q_out, s_out = torch.zeros(6, 8, dtype=torch.uint8), torch.zeros(6)
    gate_up = torch.randn(6, 16)
    got = swiglu_quantize_cpu(gate_up[2:5], out=(q_out[2:5], s_out[2:5]))
    _assert_same((q_out[2:5], s_out[2:5]), quantize_rows(swiglu_cpu(gate_up[2:5])))
    assert got[0].data_ptr() == q_out[2:5].data_ptr() and (q_out[:2] == 0).all() and (q_out[5:] == 0).all()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_row_is_named(bad):
    x = torch.randn(5, 40)
    x[3, 7] = bad
    with pytest.raises(ValueError, match="row 3 of the normalised input holds a NaN or an infinity"):
        rms_norm_quantize_cpu(x, torch.ones(40), EPS)
    with pytest.raises(ValueError, match=r"row 3 of silu\(gate\) \* up holds a NaN or an infinity"):
        swiglu_quantize_cpu(torch.cat((x, x), dim=1))


def test_the_bindings_check_their_arguments():
    ext = cpu_runtime.extension()
    x, res, w = torch.randn(4, 8), torch.randn(4, 8), torch.ones(8)
    q, s, summed = torch.empty(4, 8, dtype=torch.uint8), torch.empty(4), torch.empty(4, 8)
    base = dict(x=x, weight=w, q_out=q, scale_out=s, residual=res, sum_out=summed, x_scale=None, eps=EPS,
                isa="auto", threads=1)
    cases = [
        (dict(q_out=torch.empty(4, 8, dtype=torch.int8)), "q_out must be torch.uint8"),
        (dict(q_out=torch.empty(4, 7, dtype=torch.uint8)), r"q_out must have shape \(4, 8\)"),
        (dict(scale_out=torch.empty(4, dtype=torch.float64)), "scale_out must be torch.float32"),
        (dict(residual=None, sum_out=None, x_scale=torch.ones(4)), "x_scale .* needs a residual"),
        (dict(sum_out=None), "residual and sum_out go together"),
        (dict(x=x.bfloat16()), "x has dtype torch.bfloat16, but residual is torch.float32"),
        (dict(residual=res.bfloat16(), sum_out=summed.bfloat16(), weight=w.bfloat16(), x_scale=torch.ones(3)),
         r"x_scale must have shape \(4,\)"),
        (dict(residual=res.bfloat16(), sum_out=summed.bfloat16(), weight=w.bfloat16(), x=x.bfloat16(),
              x_scale=torch.ones(4)), "x must be torch.float32"),
        (dict(weight=torch.ones(9)), r"weight must have shape \(8,\)"),
        (dict(q_out=torch.empty(8, 4, dtype=torch.uint8).t()), "q_out must be contiguous"),
        (dict(isa="avx9"), "unknown or unbuilt isa"),
    ]
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            ext.rms_norm_quantize(**{**base, **change})
    gate, up = torch.randn(4, 8), torch.randn(4, 8)
    base = dict(gate=gate, up=up, q_out=q, scale_out=s, in_scale=None, dtype="float32", isa="auto", threads=1)
    cases = [
        (dict(dtype="float16"), "dtype must be 'float32' or 'bfloat16'"),
        (dict(dtype="bfloat16"), r"gate must be torch.bfloat16 \(dtype\)"),
        (dict(gate=gate.bfloat16(), up=up.bfloat16(), in_scale=torch.ones(4), dtype="bfloat16"),
         "gate must be torch.float32"),
        (dict(up=torch.randn(4, 9)), r"up must have shape \(4, 8\)"),
        (dict(in_scale=torch.ones(4, 1)), "in_scale must have 1 dims"),
    ]
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            ext.swiglu_quantize(**{**base, **change})
