"""The torch references of the ops against transformers' own Qwen3 modules.

The Triton kernels are tested against these references; here the references themselves are tested
against code they share nothing with (transformers.models.qwen3.modeling_qwen3), on fresh random inputs
in float32, so a reference and its kernel cannot be wrong together.
"""
from types import SimpleNamespace

import pytest
import torch
from transformers import Qwen3Config
from transformers.models.qwen3 import modeling_qwen3 as hf

from zkernels.kernels.attention import attention_torch
from zkernels.kernels.qk_norm_rope import qk_norm_rope_torch, rope_tables
from zkernels.kernels.rms_norm import add_rms_norm_torch, rms_norm_torch
from zkernels.kernels.swiglu import swiglu_torch

EPS = 1e-6
THETA = 1e6
# Attention width (4 x 24 = 96) differs from the hidden size (64), as in Qwen3-4B; GQA group of 2.
CONFIG = Qwen3Config(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
                     head_dim=24, rms_norm_eps=EPS, max_position_embeddings=4096, hidden_act="silu",
                     rope_parameters={"rope_type": "default", "rope_theta": THETA}, attention_bias=False,
                     num_hidden_layers=1, vocab_size=128)
CONFIG._attn_implementation = "eager"
TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


def _randn(gen, *shape, scale=1.0):
    return torch.randn(*shape, generator=gen) * scale


def _randomize(module, gen):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(_randn(gen, *p.shape, scale=0.5) + (1.0 if p.dim() == 1 else 0.0))
    return module.eval()


def test_rms_norm_equals_Qwen3RMSNorm(gen):
    norm = _randomize(hf.Qwen3RMSNorm(64, eps=EPS), gen)
    x = _randn(gen, 37, 64, scale=3.0)
    with torch.no_grad():
        torch.testing.assert_close(rms_norm_torch(x, norm.weight, EPS), norm(x), rtol=1e-6, atol=1e-6)


def test_add_rms_norm_equals_residual_add_then_Qwen3RMSNorm(gen):
    """Qwen3DecoderLayer: residual = residual + hidden; normed = norm(residual)."""
    norm = _randomize(hf.Qwen3RMSNorm(64, eps=EPS), gen)
    x, residual = _randn(gen, 19, 64), _randn(gen, 19, 64, scale=4.0)
    with torch.no_grad():
        normed, summed = add_rms_norm_torch(x, residual, norm.weight, EPS)
        torch.testing.assert_close(summed, residual + x, rtol=0, atol=0)
        torch.testing.assert_close(normed, norm(residual + x), rtol=1e-6, atol=1e-6)


def test_qk_norm_rope_equals_q_norm_k_norm_and_apply_rotary_pos_emb(gen):
    """Per-head RMSNorm then rotate-half RoPE, at scattered positions up to 4000 (float32 angles there
    differ from exact ones, so the tables must be computed as transformers computes them)."""
    T, Hq, Hkv, D = 23, 4, 2, 24
    q, k = _randn(gen, T, Hq, D), _randn(gen, T, Hkv, D)
    q_norm, k_norm = _randomize(hf.Qwen3RMSNorm(D, eps=EPS), gen), _randomize(hf.Qwen3RMSNorm(D, eps=EPS), gen)
    positions = torch.randint(0, 4000, (T,), generator=gen)
    rotary = hf.Qwen3RotaryEmbedding(CONFIG)
    with torch.no_grad():
        cos, sin = rotary(q, positions[None])                           # [1, T, D]
        ref_q, ref_k = hf.apply_rotary_pos_emb(q_norm(q)[None].transpose(1, 2), k_norm(k)[None].transpose(1, 2),
                                               cos, sin)                # [1, H, T, D]
        cos_t, sin_t = rope_tables(D, THETA, 4096)
        out_q, out_k = qk_norm_rope_torch(q, k, q_norm.weight, k_norm.weight, cos_t, sin_t, positions, positions, EPS)
    torch.testing.assert_close(out_q, ref_q[0].transpose(0, 1), **TOL)
    torch.testing.assert_close(out_k, ref_k[0].transpose(0, 1), **TOL)


def test_swiglu_block_equals_Qwen3MLP(gen):
    mlp = _randomize(hf.Qwen3MLP(CONFIG), gen)
    x = _randn(gen, 29, 64)
    gate_up = torch.cat((mlp.gate_proj.weight, mlp.up_proj.weight))     # the fused layout zkernels loads
    with torch.no_grad():
        ours = torch.nn.functional.linear(swiglu_torch(torch.nn.functional.linear(x, gate_up)), mlp.down_proj.weight)
        torch.testing.assert_close(ours, mlp(x), **TOL)


def _causal_mask(n):
    """transformers' additive causal mask for eager attention: [1, 1, n, n]."""
    return torch.full((n, n), torch.finfo(torch.float32).min).triu(1)[None, None]


def _eager(q, k, v):
    """transformers' eager attention (GQA by repeat_kv, causal) on one sequence: q [n, Hq, D] -> [n, Hq, D]."""
    module = SimpleNamespace(num_key_value_groups=q.shape[1] // k.shape[1], training=False)
    out, _ = hf.eager_attention_forward(module, q.transpose(0, 1)[None], k.transpose(0, 1)[None],
                                        v.transpose(0, 1)[None], _causal_mask(q.shape[0]), q.shape[-1] ** -0.5)
    return out[0]


def _i32(values):
    return torch.tensor(values, dtype=torch.int32)


def test_attention_packed_sequences_equal_eager_causal_gqa(gen):
    lens = [5, 1, 13, 9]
    T, Hq, Hkv, D = sum(lens), 4, 2, 24
    q, k, v = _randn(gen, T, Hq, D), _randn(gen, T, Hkv, D), _randn(gen, T, Hkv, D)
    cu = _i32([0, 5, 6, 19, 28])
    zeros = _i32([0] * len(lens))
    out = attention_torch(q, k, v, cu, cu, zeros, zeros, D ** -0.5)
    ref = torch.cat([_eager(q[a:b], k[a:b], v[a:b]) for a, b in zip(cu[:-1].tolist(), cu[1:].tolist())])
    torch.testing.assert_close(out, ref, **TOL)


def test_attention_shared_prefix_and_read_rows_equal_eager_on_whole_prompts(gen):
    """Packed as zkernels packs a query's documents: the prefix once (sequence 0), each document attending
    to it; and as the last layer runs: queries at each sequence's last row only. Reference: eager causal
    attention over each whole prompt (prefix + document)."""
    P, docs, Hq, Hkv, D = 7, [4, 1, 11], 4, 2, 24
    lens = [P] + docs
    T = sum(lens)
    q, k, v = _randn(gen, T, Hq, D), _randn(gen, T, Hkv, D), _randn(gen, T, Hkv, D)
    cu = _i32([0, 7, 11, 12, 23])
    starts, plens = _i32([0, 0, 0, 0]), _i32([0, P, P, P])
    full = attention_torch(q, k, v, cu, cu, starts, plens, D ** -0.5)
    last_rows = (cu[1:] - 1).long()
    read = attention_torch(q[last_rows], k, v, _i32([0, 1, 2, 3, 4]), cu, starts, plens, D ** -0.5)
    for i, (a, b) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        rows = slice(0, P) if i == 0 else slice(a, b)
        whole = torch.cat((torch.arange(0, P), torch.arange(a, b))) if i else torch.arange(0, P)
        ref = _eager(q[whole], k[whole], v[whole])[-(b - a):]           # the document's rows of its prompt
        torch.testing.assert_close(full[rows], ref, **TOL)
        torch.testing.assert_close(read[i], ref[-1], **TOL)


def test_attention_layer_equals_Qwen3Attention(gen):
    """The whole attention block as zkernels' forward wires it (fused q/k/v projection, QK-norm + RoPE,
    attention, o-proj) against transformers' Qwen3Attention with eager attention and a causal mask."""
    attn = _randomize(hf.Qwen3Attention(CONFIG, layer_idx=0), gen)
    for p in attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight, attn.o_proj.weight:
        p.data.mul_(0.3)  # keep the softmax away from one-hot, so the comparison sees every key
    n, D = 31, CONFIG.head_dim
    x = _randn(gen, n, 64)
    positions = torch.arange(n)
    with torch.no_grad():
        cos, sin = hf.Qwen3RotaryEmbedding(CONFIG)(x, positions[None])
        ref, _ = attn(x[None], (cos, sin), _causal_mask(n))
        qkv_w = torch.cat((attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight))
        qkv = torch.nn.functional.linear(x, qkv_w)
        q = qkv[:, :4 * D].view(n, 4, D)
        k = qkv[:, 4 * D:6 * D].view(n, 2, D)
        v = qkv[:, 6 * D:].view(n, 2, D)
        cos_t, sin_t = rope_tables(D, THETA, 4096)
        q, k = qk_norm_rope_torch(q, k, attn.q_norm.weight, attn.k_norm.weight, cos_t, sin_t, positions, positions, EPS)
        cu, zero = _i32([0, n]), _i32([0])
        out = attention_torch(q, k, v, cu, cu, zero, zero, D ** -0.5)
        ours = torch.nn.functional.linear(out.reshape(n, 4 * D), attn.o_proj.weight)
    torch.testing.assert_close(ours, ref[0], **TOL)
