"""The Python -> C++ boundary of zkernels._cpu_ops, called directly (no Python wrapper in front): every
argument by keyword, and what the kernels rely on (shapes that agree, strides, dtypes, devices, index
values) checked on the C++ side, a ValueError naming the argument, never a wrong answer or a read out
of bounds."""
import pytest
import torch
from _attention_packing import pack

from zkernels.kernels import cpu_runtime
from zkernels.kernels.attention import attention_torch
from zkernels.kernels.qk_norm_rope import qk_norm_rope_torch, rope_tables
from zkernels.kernels.rms_norm import add_rms_norm_torch
from zkernels.kernels.swiglu import swiglu_torch

pytestmark = pytest.mark.skipif(not cpu_runtime.available(), reason="zkernels._cpu_ops is not built")
ext = cpu_runtime.extension() if cpu_runtime.available() else None
RUN = dict(isa="scalar", threads=1)


def attention_args(dtype=torch.float32):
    q, k, v, cu_q, cu_k, ps, pl, scale = pack([(10, [5, 7])], 4, 2, 32, dtype, seed=0)
    return dict(q=q, k=k, v=v, prefix_k=k, prefix_v=v, out=torch.empty(q.shape, dtype=dtype), cu_seqlens_q=cu_q,
                cu_seqlens_k=cu_k, prefix_starts=ps, prefix_lens=pl, scale=scale, **RUN)


def test_direct_keyword_calls_match_the_references():
    a = attention_args()
    ext.attention(**a)
    ref = attention_torch(a["q"], a["k"], a["v"], a["cu_seqlens_q"], a["cu_seqlens_k"], a["prefix_starts"],
                          a["prefix_lens"], a["scale"])
    torch.testing.assert_close(a["out"], ref, rtol=1e-5, atol=1e-5)
    x, r, w = torch.randn(6, 40), torch.randn(6, 40), torch.randn(40)
    out, summed = torch.empty(6, 40), torch.empty(6, 40)
    ext.rms_norm(x=x, weight=w, out=out, residual=r, sum_out=summed, eps=1e-6, **RUN)
    ref_out, ref_sum = add_rms_norm_torch(x, r, w, 1e-6)
    torch.testing.assert_close(out, ref_out, rtol=1e-6, atol=1e-6)
    assert torch.equal(summed, ref_sum)
    gu = torch.randn(5, 18)
    out = torch.empty(5, 9)
    ext.swiglu(gate=gu[:, :9], up=gu[:, 9:], out=out, **RUN)
    torch.testing.assert_close(out, swiglu_torch(gu), rtol=1e-6, atol=1e-6)


def test_arguments_are_keyword_only():
    a = attention_args()
    with pytest.raises(TypeError):
        ext.attention(*a.values())
    with pytest.raises(TypeError):
        ext.swiglu(torch.randn(2, 4), torch.randn(2, 4), torch.empty(2, 4), "scalar", 1)


def _swap(args, **changes):
    return {**args, **changes}


@pytest.mark.parametrize("change, match", [
    # k and v handed over in each other's place, with a different number of heads than the other
    (lambda a: _swap(a, v=torch.randn(22, 1, 32)), r"attention: v must have shape \(22, 2, 32\), got \(22, 1, 32\)"),
    (lambda a: _swap(a, k=a["q"]), r"attention: v must have shape \(22, 4, 32\), got \(22, 2, 32\)"),
    (lambda a: _swap(a, q=a["q"][..., :16]), r"attention: k must have shape \(\*, \*, 16\)"),
    (lambda a: _swap(a, q=torch.randn(22, 4, 24)), "attention: q must have a head_dim that is a positive multiple"),
    (lambda a: _swap(a, q=torch.randn(22, 4, 64)[..., ::2]), r"attention: q must have a last-dim stride of 1, got "
                                                              r"strides \(256, 64, 2\)"),
    (lambda a: _swap(a, out=torch.empty(32, 4, 22).transpose(0, 2)), "attention: out must have a last-dim stride of 1"),
    (lambda a: _swap(a, out=torch.empty(22, 8, 32)[:, ::2]), "attention: out must be contiguous"),
    (lambda a: _swap(a, v=a["v"].bfloat16()), "attention: v has dtype torch.bfloat16, but q is torch.float32"),
    (lambda a: _swap(a, cu_seqlens_q=a["cu_seqlens_q"].long()), "attention: cu_seqlens_q must be torch.int32, got "
                                                                 "torch.int64"),
    (lambda a: _swap(a, prefix_lens=a["prefix_lens"][:2]), r"attention: prefix_lens must have shape \(3,\), got "
                                                           r"\(2,\)"),
    (lambda a: _swap(a, cu_seqlens_k=torch.tensor([0, 10, 15, 1000], dtype=torch.int32)),
     "attention: cu_seqlens_k ends past k's rows"),
    (lambda a: _swap(a, prefix_starts=torch.tensor([0, 0, 20], dtype=torch.int32)),
     r"prefix rows outside the prefix buffer \(sequence 2\)"),
    (lambda a: _swap(a, q=a["q"].tolist()), "attention: q must be a torch.Tensor, got list"),
    (lambda a: _swap(a, k=a["k"].to("meta")), "attention: k is on meta; the cpu ops take CPU tensors"),
    (lambda a: _swap(a, q=a["q"].double()), "attention: q must be torch.float32 or torch.bfloat16, got torch.float64"),
    (lambda a: _swap(a, isa="avx9000"), "unknown or unbuilt isa 'avx9000'"),
])
def test_attention_checks_what_it_is_given(change, match):
    with pytest.raises(ValueError, match=match):
        ext.attention(**change(attention_args()))


def rms_args():
    x = torch.randn(6, 40)
    return dict(x=x, weight=torch.randn(40), out=torch.empty(6, 40), residual=None, sum_out=None, eps=1e-6, **RUN)


@pytest.mark.parametrize("change, match", [
    (lambda a: _swap(a, weight=torch.randn(41)), r"rms_norm: weight must have shape \(40,\), got \(41,\)"),
    (lambda a: _swap(a, out=torch.empty(5, 40)), r"rms_norm: out must have shape \(6, 40\), got \(5, 40\)"),
    (lambda a: _swap(a, x=torch.randn(40, 6).t(), weight=torch.randn(6), out=torch.empty(40, 6)),
     "rms_norm: x must have a last-dim stride of 1"),
    (lambda a: _swap(a, residual=torch.randn(6, 40)), "rms_norm: residual and sum_out go together"),
    (lambda a: _swap(a, residual=torch.randn(6, 40), sum_out=torch.empty(6, 40).bfloat16()),
     "rms_norm: sum_out has dtype torch.bfloat16, but x is torch.float32"),
    (lambda a: _swap(a, x=torch.randn(2, 3, 40)), r"rms_norm: x must have 2 dims, got shape \(2, 3, 40\)"),
])
def test_rms_norm_checks_what_it_is_given(change, match):
    with pytest.raises(ValueError, match=match):
        ext.rms_norm(**change(rms_args()))


def rope_args():
    cos, sin = rope_tables(8, 1e6, 16)
    q, k = torch.randn(3, 2, 8), torch.randn(3, 1, 8)
    pos = torch.tensor([0, 5, 15])
    return dict(q=q, k=k, q_weight=torch.ones(8), k_weight=torch.ones(8), q_positions=pos, k_positions=pos, cos=cos,
                sin=sin, q_out=torch.empty(3, 2, 8), k_out=torch.empty(3, 1, 8), eps=1e-6, **RUN)


def test_qk_norm_rope_direct_call_matches_the_reference():
    a = rope_args()
    ext.qk_norm_rope(**a)
    ref_q, ref_k = qk_norm_rope_torch(a["q"], a["k"], a["q_weight"], a["k_weight"], a["cos"], a["sin"],
                                      a["q_positions"], a["k_positions"], 1e-6)
    torch.testing.assert_close(a["q_out"], ref_q, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(a["k_out"], ref_k, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("change, match", [
    (lambda a: _swap(a, q_positions=torch.tensor([0, 16, 2])),
     r"qk_norm_rope: q_positions\[1\] = 16 is outside the rope tables \(16 positions\)"),
    (lambda a: _swap(a, k_positions=a["k_positions"].int()), "qk_norm_rope: k_positions must be torch.int64"),
    (lambda a: _swap(a, q_out=a["k_out"], k_out=a["q_out"]), r"qk_norm_rope: q_out must have shape \(3, 2, 8\)"),
    (lambda a: _swap(a, sin=torch.randn(16, 8)[:, :4]), "qk_norm_rope: sin must have cos's row stride 4, got 8"),
    (lambda a: _swap(a, cos=a["cos"].double()), "qk_norm_rope: cos must be torch.float32, got torch.float64"),
    (lambda a: _swap(a, k=torch.randn(3, 1, 6)), r"qk_norm_rope: k must have head_dim 8, got shape \(3, 1, 6\)"),
])
def test_qk_norm_rope_checks_what_it_is_given(change, match):
    with pytest.raises(ValueError, match=match):
        ext.qk_norm_rope(**change(rope_args()))


def test_swiglu_checks_what_it_is_given():
    gate, out = torch.randn(5, 9), torch.empty(5, 9)
    with pytest.raises(ValueError, match=r"swiglu: up must have shape \(5, 9\), got \(5, 8\)"):
        ext.swiglu(gate=gate, up=torch.randn(5, 8), out=out, **RUN)
    with pytest.raises(ValueError, match="swiglu: out must be contiguous"):
        ext.swiglu(gate=gate, up=gate, out=torch.empty(10, 9)[::2], **RUN)
