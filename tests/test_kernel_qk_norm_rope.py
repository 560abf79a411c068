"""Triton qk_norm_rope against the torch reference (interpreter on CPU)."""
import pytest
import torch
from _kernel_util import DEVICE, assert_close, poisoned

from zkernels.kernels.qk_norm_rope import qk_norm_rope_torch, qk_norm_rope_triton, rope_tables

# fp16: the norm and the weighted product may each move one ulp, the rotation adds fp32 error then one
# final rounding: a few ulp of values |x| <~ 10.
TOL = {torch.float32: dict(atol=2e-5, rtol=2e-5), torch.float16: dict(atol=1e-2, rtol=5e-3)}


def _packed_positions(lengths):
    """Positions restarting at 0 for each packed sequence (a shuffled order also tests the gather)."""
    return torch.cat([torch.arange(n) for n in lengths]).to(DEVICE)


def _case(T, Hq, Hkv, D, dtype, max_pos=64):
    # q, k as strided views into a fused qkv buffer, as the model produces them.
    qkv = (torch.randn(T, (Hq + 2 * Hkv) * D, device=DEVICE) * 2).to(dtype)
    q = qkv[:, :Hq * D].view(T, Hq, D)
    k = qkv[:, Hq * D:(Hq + Hkv) * D].view(T, Hkv, D)
    qw = (1 + 0.3 * torch.randn(D, device=DEVICE)).to(dtype)
    kw = (1 + 0.3 * torch.randn(D, device=DEVICE)).to(dtype)
    cos, sin = rope_tables(D, 1e6, max_pos, device=DEVICE)
    return q, k, qw, kw, cos, sin


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("Hq,Hkv,D", [(4, 4, 32), (4, 2, 64), (8, 2, 128), (3, 1, 16)])
def test_qk_norm_rope(dtype, Hq, Hkv, D):
    lengths = [int(n) for n in torch.randint(1, 9, (3,))]
    T = sum(lengths)
    q, k, qw, kw, cos, sin = _case(T, Hq, Hkv, D, dtype)
    pos = _packed_positions(lengths)
    pos = pos[torch.randperm(T, device=DEVICE)]
    q_out, k_out = poisoned((T, Hq, D), dtype), poisoned((T, Hkv, D), dtype)
    got_q, got_k = qk_norm_rope_triton(q, k, qw, kw, cos, sin, pos, pos, 1e-6, q_out=q_out, k_out=k_out)
    assert got_q is q_out and got_k is k_out
    ref_q, ref_k = qk_norm_rope_torch(q, k, qw, kw, cos, sin, pos, pos, 1e-6)
    assert_close(q_out, ref_q, **TOL[dtype], what="q")
    assert_close(k_out, ref_k, **TOL[dtype], what="k")


@pytest.mark.parametrize("Tq", [0, 1, 3])
def test_qk_norm_rope_fewer_queries(Tq):
    # Last layer: queries only at a few tokens, keys at all of them (int32 positions, large offsets).
    Tk, Hq, Hkv, D = 10, 4, 2, 64
    q_all, k, qw, kw, cos, sin = _case(Tk, Hq, Hkv, D, torch.float32, max_pos=300)
    q = q_all[:Tq]
    k_pos = torch.randint(0, 300, (Tk,), device=DEVICE, dtype=torch.int32)
    q_pos = k_pos[:Tq].clone()
    q_out, k_out = poisoned((Tq, Hq, D), torch.float32), poisoned((Tk, Hkv, D), torch.float32)
    qk_norm_rope_triton(q, k, qw, kw, cos, sin, q_pos, k_pos, 1e-6, q_out=q_out, k_out=k_out)
    ref_q, ref_k = qk_norm_rope_torch(q, k, qw, kw, cos, sin, q_pos, k_pos, 1e-6)
    assert_close(q_out, ref_q, **TOL[torch.float32], what="q")
    assert_close(k_out, ref_k, **TOL[torch.float32], what="k")


def test_qk_norm_rope_bad_args():
    q, k, qw, kw, cos, sin = _case(4, 2, 1, 32, torch.float32)
    pos = torch.arange(4, device=DEVICE)
    with pytest.raises(ValueError, match="head_dim"):
        qk_norm_rope_triton(q[..., :24], k[..., :24], qw[:24], kw[:24], cos[:, :12], sin[:, :12],
                            pos, pos, 1e-6)
    with pytest.raises(ValueError, match="k_weight"):
        qk_norm_rope_triton(q, k, qw, kw[:16], cos, sin, pos, pos, 1e-6)
    with pytest.raises(ValueError, match="q_positions"):
        qk_norm_rope_triton(q, k, qw, kw, cos, sin, pos[:3], pos, 1e-6)
    with pytest.raises(ValueError, match="cos/sin"):
        qk_norm_rope_triton(q, k, qw, kw, cos[:, :8], sin[:, :8], pos, pos, 1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("Hq,Hkv,D", [(32, 8, 128), (16, 8, 128)])
def test_qk_norm_rope_bf16_gpu(Hq, Hkv, D):
    T = 4000
    q, k, qw, kw, cos, sin = _case(T, Hq, Hkv, D, torch.bfloat16, max_pos=1024)
    pos = torch.randint(0, 1024, (T,), device=DEVICE)
    got_q, got_k = qk_norm_rope_triton(q, k, qw, kw, cos, sin, pos, pos, 1e-6)
    ref_q, ref_k = qk_norm_rope_torch(q, k, qw, kw, cos, sin, pos, pos, 1e-6)
    assert_close(got_q, ref_q, atol=6e-2, rtol=3e-2, what="q")
    assert_close(got_k, ref_k, atol=6e-2, rtol=3e-2, what="k")
