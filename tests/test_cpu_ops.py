"""The C++ CPU ops (zkernels.kernels.cpu) against their torch references, on every instruction-set variant
this machine runs (scalar, AVX2, AVX-512: forced with isa=), in float32 and bfloat16.

float32: within about 1e-6 relative (the kernels reduce in another order than torch and use their own
exp). bfloat16: the math is float32 and rounds where the reference rounds, so outputs may differ only
when float32 values straddle a bf16 rounding boundary: at most one bf16 step. Batch invariance (a row's
result independent of the rows beside it) is checked bit for bit.
"""

import random

import _attention_packing
import pytest
import torch

from zkernels.kernels import cpu
from zkernels.kernels.attention import attention_torch
from zkernels.kernels.qk_norm_rope import qk_norm_rope_torch, rope_tables
from zkernels.kernels.rms_norm import add_rms_norm_torch, rms_norm_torch
from zkernels.kernels.swiglu import swiglu_torch

pytestmark = pytest.mark.skipif(not cpu.available(), reason="zkernels._cpu_ops is not built")

ISAS = cpu.isa_names() if cpu.available() else []
DTYPES = [torch.float32, torch.bfloat16]
F32 = dict(rtol=1e-6, atol=1e-6)
# Attention sums hundreds of products twice; the float32 reference itself is up to ~2e-6 from the
# float64 result on these inputs, so the kernel is held to 1e-5 of it, and separately to be no further
# from float64 than the reference is (test_attention_accuracy_against_float64).
F32_ATTENTION = dict(rtol=1e-5, atol=1e-5)
BF16_STEP = 2.0**-7  # one bf16 step, relative


def close(got, ref, what="", f32=F32):
    assert got.shape == ref.shape and got.dtype == ref.dtype, (what, got.shape, ref.shape, got.dtype, ref.dtype)
    assert not torch.isnan(got).any(), f"{what}: NaN"
    g, r = got.float(), ref.float()
    if got.dtype == torch.float32:
        torch.testing.assert_close(g, r, **f32, msg=lambda m: f"{what}: {m}")
    else:
        # at most one bf16 step of the larger magnitude (plus the float32 tolerance, for results that
        # cancel to near zero), and rarely: only where float32 values straddle a rounding boundary
        step = BF16_STEP * torch.maximum(g.abs(), r.abs()) + f32["atol"]
        assert ((g - r).abs() <= step).all(), f"{what}: off by more than one bf16 step"
        assert (g != r).float().mean() < 0.02, f"{what}: {(g != r).float().mean():.3f} of values differ"


def strided(t, extra=7):
    """t as a view with a row stride larger than its width (as slices of a fused projection)."""
    buf = torch.randn(t.shape[0], t.shape[1] + extra).to(t.dtype)
    buf[:, : t.shape[1]] = t
    return buf[:, : t.shape[1]]


@pytest.fixture(params=ISAS)
def isa(request):
    return request.param


# ------------------------------------------------------------------ RMSNorm
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,H", [(1, 1), (3, 7), (37, 200), (5, 1024), (70, 17)])
def test_rms_norm(isa, dtype, rows, H):
    torch.manual_seed(rows * 1000 + H)
    x = (3 * torch.randn(rows, H)).to(dtype)
    w = (1 + 0.3 * torch.randn(H)).to(dtype)
    close(cpu.rms_norm_cpu(x, w, 1e-6, isa=isa), rms_norm_torch(x, w, 1e-6), "rms_norm")
    xs = strided(x)
    close(cpu.rms_norm_cpu(xs, w, 1e-6, isa=isa), rms_norm_torch(xs, w, 1e-6), "rms_norm strided")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,H", [(1, 1), (3, 7), (37, 200), (5, 1024)])
def test_add_rms_norm(isa, dtype, rows, H):
    torch.manual_seed(rows + H)
    x, r = torch.randn(rows, H).to(dtype), (4 * torch.randn(rows, H)).to(dtype)
    w = (1 + 0.3 * torch.randn(H)).to(dtype)
    out, summed = cpu.add_rms_norm_cpu(strided(x), r, w, 1e-6, isa=isa)
    ref_out, ref_sum = add_rms_norm_torch(x, r, w, 1e-6)
    assert torch.equal(summed, ref_sum)  # one rounded add, as torch
    close(out, ref_out, "add_rms_norm")


def test_rms_norm_3d_input_and_empty():
    x = torch.randn(2, 3, 64)
    w = torch.randn(64)
    close(cpu.rms_norm_cpu(x, w, 1e-6), rms_norm_torch(x, w, 1e-6), "3-D")
    assert cpu.rms_norm_cpu(torch.randn(0, 64), w, 1e-6).shape == (0, 64)


# ------------------------------------------------------------------ QK-norm + RoPE
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("Hq,Hkv,D", [(4, 2, 32), (16, 8, 128), (8, 1, 64), (2, 2, 24)])
def test_qk_norm_rope(isa, dtype, Hq, Hkv, D):
    torch.manual_seed(Hq * D)
    T = 29
    qkv = (2 * torch.randn(T, (Hq + 2 * Hkv) * D)).to(dtype)  # q, k as strided views, as in the model
    q, k = qkv[:, : Hq * D].view(T, Hq, D), qkv[:, Hq * D : (Hq + Hkv) * D].view(T, Hkv, D)
    qw, kw = (1 + 0.3 * torch.randn(D)).to(dtype), (1 + 0.3 * torch.randn(D)).to(dtype)
    cos, sin = rope_tables(D, 1e6, 4096)
    kpos = torch.randint(0, 4096, (T,))
    qpos = kpos[:11].to(torch.int32)  # fewer query rows (the last layer), int32 positions
    got = cpu.qk_norm_rope_cpu(q[:11], k, qw, kw, cos, sin, qpos, kpos, 1e-6, isa=isa)
    ref = qk_norm_rope_torch(q[:11], k, qw, kw, cos, sin, qpos, kpos, 1e-6)
    close(got[0], ref[0], "q")
    close(got[1], ref[1], "k")
    assert got[0].is_contiguous() and got[1].is_contiguous()


# ------------------------------------------------------------------ SwiGLU
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,I", [(1, 1), (7, 17), (33, 99), (4, 3072)])
def test_swiglu(isa, dtype, rows, I):
    torch.manual_seed(rows * I)
    gu = (4 * torch.randn(rows, 2 * I)).to(dtype)
    gu[0, 0], gu[-1, I - 1] = 100.0, -100.0  # exp's overflow and underflow ends
    close(cpu.swiglu_cpu(gu, isa=isa), swiglu_torch(gu), "swiglu")
    close(cpu.swiglu_cpu(strided(gu), isa=isa), swiglu_torch(gu), "swiglu strided")
    g, u = gu[:, :I], gu[:, I:]
    close(cpu.swiglu_pair_cpu(g, u, isa=isa), swiglu_torch(gu), "swiglu pair")


# ------------------------------------------------------------------ attention
def pack(groups, Hq, Hkv, D, dtype, last_layer=False, seed=0):
    return _attention_packing.pack(groups, Hq, Hkv, D, dtype, last_layer, seed=seed)


def attention_float64(q, k, v, cu_q, cu_k, p_start, p_len, scale):
    """attention_torch's definition evaluated in float64 (the truth both float32 versions approximate)."""
    group = q.shape[1] // k.shape[1]
    out = torch.zeros(q.shape, dtype=torch.float64)
    for i in range(len(cu_q) - 1):
        q0, q1, k0, k1 = int(cu_q[i]), int(cu_q[i + 1]), int(cu_k[i]), int(cu_k[i + 1])
        p0, p1 = int(p_start[i]), int(p_start[i]) + int(p_len[i])
        nq, nk, n_prefix = q1 - q0, k1 - k0, p1 - p0
        if nq == 0:
            continue
        keys = torch.cat((k[p0:p1], k[k0:k1])).double().repeat_interleave(group, 1)
        values = torch.cat((v[p0:p1], v[k0:k1])).double().repeat_interleave(group, 1)
        s = torch.einsum("qhd,khd->hqk", q[q0:q1].double(), keys) * scale
        row, col = torch.arange(nq)[:, None], torch.arange(n_prefix + nk)[None]
        s = s.masked_fill(~((col < n_prefix) | (col - n_prefix <= row + nk - nq)), float("-inf"))
        out[q0:q1] = torch.einsum("hqk,khd->qhd", s.softmax(-1), values)
    return out


def rounds_p_to_bf16(isa, dtype) -> bool:
    """The AVX512-BF16 variant computes bf16 attention with bf16 pair products: the softmax weights are
    rounded to bf16 before P V (as flash attention and torch's CPU flash attention do), so it is held to
    the float64 result (no more than 1.5x the reference's error) rather than to the reference's bits."""
    return isa == "avx512bf16" and dtype == torch.bfloat16


_REFERENCES: dict = {}  # key -> (torch reference, float64 result): computed once, shared by the ISA variants


def check_attention(args, isa, what="attention", key=None):
    """key: a hashable description of args (the same inputs for every ISA), to reuse the references."""
    got = cpu.attention_cpu(*args, isa=isa)
    if key is None or key not in _REFERENCES:
        refs = (attention_torch(*args), attention_float64(*args))
        if key is not None:
            _REFERENCES[key] = refs
    else:
        refs = _REFERENCES[key]
    ref, truth = refs
    if rounds_p_to_bf16(isa, got.dtype):
        ours, theirs = (got.double() - truth).abs(), (ref.double() - truth).abs()
        assert not torch.isnan(got).any(), what
        assert ours.mean() <= 1.5 * theirs.mean() and ours.max() <= 1.5 * theirs.max() + 1e-6, (
            what,
            ours.mean().item(),
            theirs.mean().item(),
            ours.max().item(),
            theirs.max().item(),
        )
    else:
        close(got, ref, what, F32_ATTENTION)


# Lengths around the 32-row work items and 64-key tiles; one-token documents; a group with no prefix; a
# prefix with a single one-token document; a sequence with more query rows than a tile.
GROUPS = [(13, [1, 5, 63, 64, 65]), (70, [1]), (0, [9, 1, 130]), (64, [2, 33])]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("Hq,Hkv,D", [(4, 4, 64), (4, 2, 128), (8, 2, 64), (16, 2, 128), (8, 8, 32)])
@pytest.mark.parametrize("last_layer", [False, True])
def test_attention(isa, dtype, Hq, Hkv, D, last_layer):
    check_attention(pack(GROUPS, Hq, Hkv, D, dtype, last_layer), isa, key=(Hq, Hkv, D, dtype, last_layer))


@pytest.mark.parametrize("dtype", DTYPES)
def test_attention_odd_layouts(isa, dtype):
    # one token alone; one sequence; a prefix-only group (the prefix sequence with no document)
    for groups in ([(0, [1])], [(0, [200])], [(5, [])], [(40, [])]):
        check_attention(pack(groups, 4, 1, 64, dtype), isa, f"attention {groups}", key=(str(groups), dtype))
    # sequences with zero query rows among others (the last layer's prefix sequences), GQA 8
    check_attention(
        pack([(30, [3, 4]), (20, [1])], 16, 2, 64, dtype, last_layer=True), isa, "zero-query sequences",
        key=("zq", dtype),
    )


def test_attention_separate_prefix_buffers():
    q, k, v, cu_q, cu_k, _, _, scale = pack([(0, [5, 70, 1])], 8, 2, 64, torch.float32)
    pk, pv = torch.randn(100, 2, 64), torch.randn(100, 2, 64)
    p_start, p_len = torch.tensor([0, 30, 99], dtype=torch.int32), torch.tensor([30, 69, 1], dtype=torch.int32)
    got = cpu.attention_cpu(q, k, v, cu_q, cu_k, p_start, p_len, scale, pk, pv)
    close(got, attention_torch(q, k, v, cu_q, cu_k, p_start, p_len, scale, pk, pv), "separate prefix", F32_ATTENTION)


@pytest.mark.parametrize("dtype", DTYPES)
def test_attention_read_rows_equal_all_rows(dtype):
    """A query row's result does not depend on which rows share its work item: the last layer (read rows
    only) gives bit for bit what the full layer gives at those rows."""
    full = pack(GROUPS, 8, 2, 64, dtype)
    out = cpu.attention_cpu(*full)
    q, k, v, cu_q, cu_k, ps, pl, scale = full
    keep = cu_q[1:] > cu_q[:-1]  # every sequence with rows reads its last one
    rows = (cu_q[1:] - 1)[keep].long()
    cu_read = torch.cat((torch.zeros(1, dtype=torch.int32), keep.to(torch.int32).cumsum(0).to(torch.int32)))
    read = cpu.attention_cpu(q[rows], k, v, cu_read, cu_k, ps, pl, scale)
    assert torch.equal(read, out[rows])


# ------------------------------------------------------------------ batch invariance
@pytest.mark.parametrize("dtype", DTYPES)
def test_row_ops_are_batch_invariant(dtype):
    torch.manual_seed(1)
    H, I, D = 192, 160, 64
    x, r, w = torch.randn(300, H).to(dtype), torch.randn(300, H).to(dtype), torch.randn(H).to(dtype)
    gu = torch.randn(300, 2 * I).to(dtype)
    qkv = torch.randn(300, 6 * D).to(dtype)
    cos, sin = rope_tables(D, 1e6, 1024)
    pos = torch.randint(0, 1024, (300,))
    full = (
        cpu.rms_norm_cpu(x, w, 1e-6),
        cpu.add_rms_norm_cpu(x, r, w, 1e-6)[0],
        cpu.swiglu_cpu(gu),
        cpu.qk_norm_rope_cpu(
            qkv[:, : 4 * D].view(-1, 4, D),
            qkv[:, 4 * D :].view(-1, 2, D),
            w[:D],
            w[D : 2 * D],
            cos,
            sin,
            pos,
            pos,
            1e-6,
        )[0],
    )
    for a, b in ((0, 1), (5, 9), (17, 300), (250, 251)):
        part = (
            cpu.rms_norm_cpu(x[a:b], w, 1e-6),
            cpu.add_rms_norm_cpu(x[a:b], r[a:b], w, 1e-6)[0],
            cpu.swiglu_cpu(gu[a:b]),
            cpu.qk_norm_rope_cpu(
                qkv[a:b, : 4 * D].view(-1, 4, D),
                qkv[a:b, 4 * D :].view(-1, 2, D),
                w[:D],
                w[D : 2 * D],
                cos,
                sin,
                pos[a:b],
                pos[a:b],
                1e-6,
            )[0],
        )
        for name, f, p in zip(("rms_norm", "add_rms_norm", "swiglu", "qk_norm_rope"), full, part):
            assert torch.equal(f[a:b], p), (name, a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_attention_is_batch_invariant(dtype):
    """A group's rows are bit-identical alone and packed with other groups, in any order."""
    mine = (37, [1, 66, 5])
    others = [(0, [40]), (70, [3, 1, 90]), (5, [128])]
    alone = cpu.attention_cpu(*pack([mine], 8, 2, 64, dtype, seed=3))
    n_mine = 37 + 1 + 66 + 5
    for before in (others[:1], others, []):
        after = [g for g in others if g not in before]
        groups = before + [mine] + after
        q, k, v, cu_q, cu_k, ps, pl, scale = pack(groups, 8, 2, 64, dtype, seed=9)
        start = sum(p + sum(d) for p, d in before)
        ref_q, ref_k, ref_v = pack([mine], 8, 2, 64, dtype, seed=3)[:3]
        q, k, v = q.clone(), k.clone(), v.clone()
        q[start : start + n_mine], k[start : start + n_mine], v[start : start + n_mine] = ref_q, ref_k, ref_v
        out = cpu.attention_cpu(q, k, v, cu_q, cu_k, ps, pl, scale)
        assert torch.equal(out[start : start + n_mine], alone), [len(g[1]) for g in groups]


def test_threads_do_not_change_results():
    args = pack(GROUPS, 8, 2, 64, torch.float32)
    x = torch.randn(999, 256)
    w = torch.randn(256)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = (cpu.attention_cpu(*args), cpu.rms_norm_cpu(x, w, 1e-6))
        torch.set_num_threads(max(2, before))
        many = (cpu.attention_cpu(*args), cpu.rms_norm_cpu(x, w, 1e-6))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(one, many))


# ------------------------------------------------------------------ variants and bad input
def test_isa_choice(monkeypatch):
    assert "scalar" in ISAS and cpu.resolve_isa() == ISAS[0]
    monkeypatch.setenv(cpu.ISA_ENV_VAR, "scalar")
    assert cpu.resolve_isa() == "scalar"
    monkeypatch.setenv(cpu.ISA_ENV_VAR, "avx9000")
    with pytest.raises(ValueError, match=r"unknown isa 'avx9000' \(from ZKERNELS_CPU_ISA\)"):
        cpu.rms_norm_cpu(torch.randn(2, 8), torch.ones(8), 1e-6)
    monkeypatch.delenv(cpu.ISA_ENV_VAR)
    with pytest.raises(ValueError, match="unknown isa 'sse'"):
        cpu.resolve_isa("sse")


def test_bad_input_is_a_clear_error():
    x, w = torch.randn(4, 8), torch.ones(8)
    with pytest.raises(ValueError, match="x has dtype torch.float64"):
        cpu.rms_norm_cpu(x.double(), w, 1e-6)
    with pytest.raises(ValueError, match="x is on meta"):
        cpu.rms_norm_cpu(x.to("meta"), w, 1e-6)
    with pytest.raises(ValueError, match=r"weight must have shape \[8\]"):
        cpu.rms_norm_cpu(x, torch.ones(9), 1e-6)
    with pytest.raises(ValueError, match="weight has dtype torch.bfloat16, but the other operands are torch.float32"):
        cpu.rms_norm_cpu(x, w.bfloat16(), 1e-6)
    with pytest.raises(ValueError, match="residual has shape"):
        cpu.add_rms_norm_cpu(x, torch.randn(3, 8), w, 1e-6)
    with pytest.raises(ValueError, match="last dim must be even"):
        cpu.swiglu_cpu(torch.randn(3, 7))
    cos, sin = rope_tables(8, 1e6, 16)
    q = torch.randn(3, 2, 8)
    with pytest.raises(ValueError, match=r"q_positions\[1\] = 16 is outside the rope tables \(16 positions\)"):
        cpu.qk_norm_rope_cpu(q, q, w, w, cos, sin, torch.tensor([0, 16, 2]), torch.tensor([0, 1, 2]), 1e-6)
    with pytest.raises(ValueError, match=r"k_positions\[0\] = -1"):
        cpu.qk_norm_rope_cpu(q, q, w, w, cos, sin, torch.tensor([0, 1, 2]), torch.tensor([-1, 1, 2]), 1e-6)
    with pytest.raises(ValueError, match="cos must be a float32 CPU tensor"):
        cpu.qk_norm_rope_cpu(q, q, w, w, cos.double(), sin, torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]), 1e-6)


def test_bad_attention_input_is_a_clear_error():
    q, k, v, cu_q, cu_k, ps, pl, scale = pack([(10, [5, 7])], 4, 2, 64, torch.float32)
    with pytest.raises(ValueError, match="head_dim must be a positive multiple of 16"):
        cpu.attention_cpu(q[..., :24], k[..., :24], v[..., :24], cu_q, cu_k, ps, pl, scale)
    with pytest.raises(ValueError, match=r"query heads \(4\) must be a multiple of kv heads \(3\)"):
        cpu.attention_cpu(q, torch.randn(22, 3, 64), torch.randn(22, 3, 64), cu_q, cu_k, ps, pl, scale)
    with pytest.raises(ValueError, match="v dtype|v has dtype"):
        cpu.attention_cpu(q, k, v.bfloat16(), cu_q, cu_k, ps, pl, scale)
    with pytest.raises(ValueError, match="prefix_lens must be a 1-D int32/int64 tensor of length 3"):
        cpu.attention_cpu(q, k, v, cu_q, cu_k, ps, pl[:2], scale)
    bad = cu_k.clone()
    bad[-1] = 1000
    with pytest.raises(ValueError, match="cu_seqlens_k ends past k's rows"):
        cpu.attention_cpu(q, k, v, cu_q, bad, ps, pl, scale)
    bad = cu_q.clone()
    bad[2] = 9
    with pytest.raises(ValueError, match=r"cu_seqlens must not decrease \(sequence 1\)"):
        cpu.attention_cpu(q, k, v, bad, cu_k, ps, pl, scale)
    bad = ps.clone()
    bad[2] = 20
    with pytest.raises(ValueError, match=r"prefix rows outside the prefix buffer \(sequence 2\)"):
        cpu.attention_cpu(q, k, v, cu_q, cu_k, bad, pl, scale)
    more = torch.tensor([0, 10, 17, 22], dtype=torch.int32)  # sequence 1: 7 query rows, 5 keys, no prefix
    with pytest.raises(ValueError, match=r"more query rows than keys \(sequence 1\)"):
        cpu.attention_cpu(q, k, v, more, cu_k, ps, torch.zeros(3, dtype=torch.int32), scale)
    with pytest.raises(ValueError, match="pass both prefix_k and prefix_v"):
        cpu.attention_cpu(q, k, v, cu_q, cu_k, ps, pl, scale, prefix_k=k)


@pytest.mark.parametrize("dtype", DTYPES)
def test_attention_accuracy_against_float64(isa, dtype):
    """No further from the float64 result than the torch reference (mean and max, 10% slack; 50% where
    P is rounded to bf16, see rounds_p_to_bf16)."""
    args = pack(GROUPS, 16, 2, 128, dtype)
    truth = attention_float64(*args)
    ours = (cpu.attention_cpu(*args, isa=isa).double() - truth).abs()
    ref = (attention_torch(*args).double() - truth).abs()
    slack = 1.5 if rounds_p_to_bf16(isa, dtype) else 1.1
    assert ours.mean() <= slack * ref.mean() and ours.max() <= slack * ref.max() + 1e-7, (ours.mean(), ref.mean())


def test_random_layouts_against_the_reference():
    """Fresh random packings each run (seeded by the run, printed on failure)."""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    for _ in range(4):
        groups = [
            (rng.choice([0, rng.randint(1, 140)]), [rng.randint(1, 150) for _ in range(rng.randint(0, 4))])
            for _ in range(rng.randint(1, 4))
        ]
        hkv, g = rng.choice([1, 2, 4]), rng.choice([1, 2, 4, 8])
        d = rng.choice([64, 128])
        args = pack(groups, hkv * g, hkv, d, torch.float32, last_layer=rng.random() < 0.3, seed=seed)
        close(
            cpu.attention_cpu(*args),
            attention_torch(*args),
            f"seed {seed} groups {groups} hkv {hkv} g {g} d {d}",
            F32_ATTENTION,
        )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("prefix_len", [1, 13, 64, 70, 130])
def test_prefix_split_is_bit_identical_to_the_whole_prompt(isa, dtype, prefix_len):
    """Keys sit in tiles at fixed offsets of prefix ++ own rows, so a prompt split into a shared prefix
    and the rest gives bit for bit what it gives packed whole (the prefix cache changes nothing), on
    every row and in the last layer's read-row form."""
    n = 75
    g = torch.Generator().manual_seed(prefix_len)
    Hq, Hkv, D = 8, 2, 64
    rows = torch.randn(prefix_len + n, (Hq + 2 * Hkv) * D, generator=g).to(dtype)
    q, k, v = (
        rows[:, : Hq * D].view(-1, Hq, D),
        rows[:, Hq * D : (Hq + Hkv) * D].view(-1, Hkv, D),
        rows[:, (Hq + Hkv) * D :].view(-1, Hkv, D),
    )
    i32 = lambda xs: torch.tensor(xs, dtype=torch.int32)  # noqa: E731
    P, T = prefix_len, prefix_len + n
    whole = cpu.attention_cpu(q, k, v, i32([0, T]), i32([0, T]), i32([0]), i32([0]), D**-0.5, isa=isa)
    split = cpu.attention_cpu(q, k, v, i32([0, P, T]), i32([0, P, T]), i32([0, 0]), i32([0, P]), D**-0.5, isa=isa)
    assert torch.equal(whole, split)
    read_whole = cpu.attention_cpu(q[T - 1 :], k, v, i32([0, 1]), i32([0, T]), i32([0]), i32([0]), D**-0.5, isa=isa)
    read_split = cpu.attention_cpu(
        q[T - 1 :], k, v, i32([0, 0, 1]), i32([0, P, T]), i32([0, 0]), i32([0, P]), D**-0.5, isa=isa
    )
    assert torch.equal(read_whole, read_split) and torch.equal(read_whole, whole[T - 1 :])
