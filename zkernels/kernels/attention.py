"""Shared-prefix variable-length attention (forward only).

Packed sequences, no padding. Sequence i owns
  - query rows  q[cu_seqlens_q[i] : cu_seqlens_q[i+1]]
  - key rows    k[cu_seqlens_k[i] : cu_seqlens_k[i+1]]   (attended causally)
  - prefix rows prefix_k[prefix_starts[i] : prefix_starts[i] + prefix_lens[i]]  (attended in full)
Causality is bottom-right aligned, as in flash-attn's varlen API: when a sequence has fewer query rows
than key rows (the last layer computes queries only where the output is read), query row j sees its own
keys 0 .. (n_k - n_q + j). prefix_k/prefix_v default to k/v: the query prefix is packed in the same
buffer as the documents that reuse it, so one launch serves the prefix and its documents.
GQA: query head h reads kv head h // (Hq // Hkv).
"""
import torch


def attention_torch(q, k, v, cu_seqlens_q, cu_seqlens_k, prefix_starts, prefix_lens, scale,
                    prefix_k=None, prefix_v=None):
    prefix_k = k if prefix_k is None else prefix_k
    prefix_v = v if prefix_v is None else prefix_v
    n_heads, n_kv_heads = q.shape[1], k.shape[1]
    group = n_heads // n_kv_heads
    out = torch.empty_like(q)
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    ps, pl = prefix_starts.tolist(), prefix_lens.tolist()
    for i in range(len(cq) - 1):
        nq, nk = cq[i + 1] - cq[i], ck[i + 1] - ck[i]
        if nq == 0:
            continue
        keys = torch.cat((prefix_k[ps[i]:ps[i] + pl[i]], k[ck[i]:ck[i + 1]])).float()
        values = torch.cat((prefix_v[ps[i]:ps[i] + pl[i]], v[ck[i]:ck[i + 1]])).float()
        keys = keys.repeat_interleave(group, dim=1)
        values = values.repeat_interleave(group, dim=1)
        scores = torch.einsum("qhd,khd->hqk", q[cq[i]:cq[i + 1]].float(), keys) * scale
        row = torch.arange(nq, device=q.device)[:, None]
        col = torch.arange(pl[i] + nk, device=q.device)[None, :]
        visible = (col < pl[i]) | (col - pl[i] <= row + (nk - nq))
        scores = scores.masked_fill(~visible, float("-inf"))
        out[cq[i]:cq[i + 1]] = torch.einsum("hqk,khd->qhd", scores.softmax(-1), values).to(q.dtype)
    return out


# ---------------------------------------------------------------------------------------------------
# Triton kernel
#
# Grid (work blocks, kv heads). A work block is TOKENS query tokens of one sequence; the program takes
# those tokens for ALL query heads of its kv head, stacked token-major as the tile rows
# (row r = token r // G, head r % G, G = Hq // Hkv). Each K/V tile is therefore loaded once for the
# whole GQA group, and the query prefix's K/V once per document block.
# The block table (program -> sequence, first token) is built on the device without a host sync; the
# grid is an upper bound on the number of blocks and surplus programs exit at once.
# Per program: one pass over the virtual key sequence [prefix ++ own keys], unmasked while every row
# sees the whole key tile, masked on the diagonal tiles.
# ---------------------------------------------------------------------------------------------------
from dataclasses import dataclass  # noqa: E402

from ._triton_util import (  # noqa: E402
    check_out,
    check_same_device,
    device_capability,
    interpreting,
    is_pow2,
    require_triton,
    tl,
    triton,
)
from .attention_inputs import check_attention_inputs  # noqa: E402

_LOG2E = 1.4426950408889634


@triton.jit
def _attend_tile(acc, m_i, l_i, q, pk_base, pv_base, spk_t, spv_t, k_base, v_base, sk_t, sv_t,
                 j0, p_len, n_keys, row_limit, qk_scale, offs_n, offs_d,
                 MASKED: tl.constexpr, PREC: tl.constexpr, KV_ALIGNED: tl.constexpr):
    """Key tile [j0, j0 + BLOCK_N) of the virtual key sequence [prefix ++ own] into the running
    softmax (fp32, base 2). Key c < p_len comes from the prefix buffer, key c >= p_len from the
    sequence's own rows; a tile may straddle the two."""
    cols = j0 + offs_n
    c64 = cols.to(tl.int64)
    own = c64 - p_len
    in_prefix = cols < p_len
    k_rows = tl.where(in_prefix, pk_base + c64 * spk_t, k_base + own * sk_t)
    v_rows = tl.where(in_prefix, pv_base + c64 * spv_t, v_base + own * sv_t)
    if KV_ALIGNED:
        # The compiler cannot see through the select above that every row starts on 16 bytes, and
        # then loads K/V one element at a time, with a 64-bit address per element: register spills
        # and no cp.async pipelining. The launcher sets KV_ALIGNED only when the base pointers and
        # row/head strides of k, v, prefix_k and prefix_v are all multiples of 16 bytes.
        k_rows = tl.multiple_of(k_rows, 16)
        v_rows = tl.multiple_of(v_rows, 16)
    if MASKED:
        in_bounds = cols[:, None] < n_keys
        k = tl.load(k_rows[:, None] + offs_d[None, :], mask=in_bounds, other=0.0)
        v = tl.load(v_rows[:, None] + offs_d[None, :], mask=in_bounds, other=0.0)
    else:
        k = tl.load(k_rows[:, None] + offs_d[None, :])
        v = tl.load(v_rows[:, None] + offs_d[None, :])
    s = tl.dot(q, tl.trans(k), input_precision=PREC) * qk_scale
    if MASKED:
        # row_limit: the last key each row sees (every prefix key, own keys causally); bounded by
        # n_keys for valid rows, the bound also covers padding rows.
        s = tl.where((cols[None, :] <= row_limit[:, None]) & (cols[None, :] < n_keys), s, float("-inf"))
    # m_i starts finite (-1e30), so a row with every key of this tile masked gets p = 0, alpha = 1
    # (an exact no-op) instead of NaN from (-inf) - (-inf).
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    p = tl.math.exp2(s - m_new[:, None])
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PREC)
    return acc, m_new, l_i


@triton.jit
def _attention_kernel(q_ptr, k_ptr, v_ptr, pk_ptr, pv_ptr, o_ptr,
                      cu_q_ptr, cu_k_ptr, pstart_ptr, plen_ptr, table_ptr,
                      sq_t, sq_h, sk_t, sk_h, sv_t, sv_h, spk_t, spk_h, spv_t, spv_h, so_t, so_h,
                      qk_scale,
                      G: tl.constexpr, TOKENS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                      HEAD_DIM: tl.constexpr, PREC: tl.constexpr, KV_ALIGNED: tl.constexpr):
    pid = tl.program_id(0)
    kvh = tl.program_id(1)
    seq = tl.load(table_ptr + 2 * pid)
    if seq >= 0:  # surplus programs of the upper-bound grid have seq == -1
        tok0 = tl.load(table_ptr + 2 * pid + 1)
        q_beg = tl.load(cu_q_ptr + seq)
        nq = tl.load(cu_q_ptr + seq + 1) - q_beg
        k_beg = tl.load(cu_k_ptr + seq)
        nk = tl.load(cu_k_ptr + seq + 1) - k_beg
        p_beg = tl.load(pstart_ptr + seq)
        p_len = tl.load(plen_ptr + seq)

        r = tl.arange(0, BLOCK_M)
        tok = tok0 + r // G
        head = kvh * G + r % G
        row_ok = (r < TOKENS * G) & (tok < nq)
        offs_d = tl.arange(0, HEAD_DIM)
        offs_n = tl.arange(0, BLOCK_N)
        q_rows = (q_beg + tok).to(tl.int64) * sq_t + head.to(tl.int64) * sq_h
        q = tl.load(q_ptr + q_rows[:, None] + offs_d[None, :], mask=row_ok[:, None], other=0.0)

        m_i = tl.full([BLOCK_M], -1.0e30, dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

        pk_base = pk_ptr + p_beg.to(tl.int64) * spk_t + kvh.to(tl.int64) * spk_h
        pv_base = pv_ptr + p_beg.to(tl.int64) * spv_t + kvh.to(tl.int64) * spv_h
        k_base = k_ptr + k_beg.to(tl.int64) * sk_t + kvh.to(tl.int64) * sk_h
        v_base = v_ptr + k_beg.to(tl.int64) * sv_t + kvh.to(tl.int64) * sv_h
        # Virtual keys c = 0 .. p_len + nk - 1: the prefix in full, then own keys causally, bottom-right
        # aligned (token t sees own keys 0 .. t + nk - nq). Tiles sit at fixed multiples of BLOCK_N of
        # this sequence, so a prompt split into prefix + document gives bit-for-bit the result of the
        # same prompt packed whole (batch invariance), and the prefix K/V is read once per q block.
        n_keys = p_len + nk
        shift = p_len + nk - nq
        row_limit = tok + shift
        # Keys below tok0 + shift + 1 are visible to every row of the tile: no mask needed there.
        full_end = (tl.maximum(tok0 + shift + 1, 0) // BLOCK_N) * BLOCK_N
        last_tok = tl.minimum(tok0 + TOKENS, nq) - 1
        end = tl.minimum(last_tok + shift + 1, n_keys)
        for j0 in range(0, full_end, BLOCK_N):
            acc, m_i, l_i = _attend_tile(acc, m_i, l_i, q, pk_base, pv_base, spk_t, spv_t, k_base, v_base,
                                         sk_t, sv_t, j0, p_len, n_keys, row_limit, qk_scale, offs_n, offs_d,
                                         False, PREC, KV_ALIGNED)
        for j0 in range(full_end, end, BLOCK_N):
            acc, m_i, l_i = _attend_tile(acc, m_i, l_i, q, pk_base, pv_base, spk_t, spv_t, k_base, v_base,
                                         sk_t, sv_t, j0, p_len, n_keys, row_limit, qk_scale, offs_n, offs_d,
                                         True, PREC, KV_ALIGNED)

        out = acc / l_i[:, None]
        o_rows = (q_beg + tok).to(tl.int64) * so_t + head.to(tl.int64) * so_h
        tl.store(o_ptr + o_rows[:, None] + offs_d[None, :], out.to(o_ptr.dtype.element_ty),
                 mask=row_ok[:, None])


@dataclass(frozen=True)
class AttentionConfig:
    block_m: int      # tile rows (query tokens x heads of one GQA group)
    block_n: int      # key tile
    tokens: int       # query tokens per work block = block_m // group
    num_warps: int
    num_stages: int


# GPU tile configurations (block_m, block_n, num_warps, num_stages) by head_dim bucket and dtype. Every one
# the model shapes select compiles for sm_80 (A100), sm_89 (RTX 4090) and sm_90 (H100) with no register
# spills (0 bytes of stack and local memory), within each target's per-block shared memory, with both dots
# on the tensor cores in bf16/fp16 (wgmma on sm_90, mma.sync on sm_80/89): benchmarks/gpu_report.py
# records it and tests/test_gpu_compile.py keeps it so. A per-capability entry overrides where one
# configuration does not fit every target.
_GPU_CONFIGS = {
    # (head_dim bucket, "tc" = bf16/fp16 on tensor cores | "fp32" = ieee dots on CUDA cores): config
    (64, "tc"): (128, 64, 8, 3),
    (128, "tc"): (128, 64, 8, 3),
    (256, "tc"): (64, 32, 8, 3),
    # float32 keeps ieee dots (exact products) on CUDA cores; larger tiles spill on sm_90
    (64, "fp32"): (32, 16, 8, 2),
    (128, "fp32"): (32, 16, 8, 2),
    (256, "fp32"): (16, 16, 8, 2),
}
_GPU_CONFIGS_BY_CAPABILITY: dict[tuple[int, int, str], tuple[int, int, int, int]] = {
    # (capability, head_dim bucket, dtype class): config, where the shared table does not fit
    (89, 256, "tc"): (64, 32, 8, 2),  # 3 stages need 100 KB of shared memory, over the RTX 4090's 99 KB
}


def attention_config(head_dim: int, group: int, dtype: torch.dtype | None = None,
                     capability: int | None = None) -> AttentionConfig:
    """Tile sizes for head_dim, the GQA group, the dtype (None: bf16/fp16) and the GPU's compute
    capability (e.g. 90 for sm_90; None: the shared table). The launcher and benchmarks/gpu_report.py
    both call this, so the report checks exactly what runs. Under the interpreter small tiles keep the
    tests fast and still exercise several tiles."""
    g2 = triton.next_power_of_2(group)
    if interpreting():
        block_m, block_n, warps, stages = max(16, 8 * g2), 16, 4, 1
    else:
        bucket = 64 if head_dim <= 64 else 128 if head_dim <= 128 else 256
        kind = "fp32" if dtype == torch.float32 else "tc"
        block_m, block_n, warps, stages = _GPU_CONFIGS_BY_CAPABILITY.get((capability, bucket, kind),
                                                                         _GPU_CONFIGS[bucket, kind])
        block_m = max(block_m, g2)
    return AttentionConfig(block_m, block_n, block_m // group, warps, stages)


@dataclass(frozen=True)
class AttentionPlan:
    """Work-block table for one set of cu_seqlens_q; the same for every layer of a forward, so a
    caller may build it once (plan_attention) and pass plan= to each attention call."""
    table: torch.Tensor  # int32 [n_programs, 2]: (sequence or -1, first query token)
    config: AttentionConfig
    n_q_rows: int


def plan_attention(cu_seqlens_q: torch.Tensor, n_q_rows: int, n_heads: int, n_kv_heads: int,
                   head_dim: int, *, dtype: torch.dtype | None = None, capability: int | None = None) -> AttentionPlan:
    """Maps program ids to (sequence, first token) with device ops only (no host sync). Programs:
    ceil(n_q_rows / tokens) + n_seqs, an upper bound on sum_i ceil(n_q_i / tokens). dtype: q's (None:
    bf16/fp16); capability: the GPU's (default: that of cu_seqlens_q's device)."""
    if capability is None:
        capability = device_capability(cu_seqlens_q.device)
    cfg = attention_config(head_dim, n_heads // n_kv_heads, dtype, capability)
    cu = cu_seqlens_q.to(torch.int64)
    n_seqs = cu.numel() - 1
    counts = (cu[1:] - cu[:-1] + cfg.tokens - 1) // cfg.tokens  # blocks per sequence (0 if no rows)
    ends = torch.cumsum(counts, 0)
    n_programs = max(1, (n_q_rows + cfg.tokens - 1) // cfg.tokens + n_seqs)
    pid = torch.arange(n_programs, device=cu.device)
    seq = torch.searchsorted(ends, pid, right=True)  # first sequence whose blocks end after pid
    valid = seq < n_seqs
    seq_c = seq.clamp(max=max(n_seqs - 1, 0))
    if n_seqs == 0:
        tok0 = torch.zeros_like(pid)
    else:
        tok0 = (pid - (ends[seq_c] - counts[seq_c])) * cfg.tokens
    table = torch.stack((torch.where(valid, seq, torch.full_like(seq, -1)), torch.where(valid, tok0, 0)), 1)
    return AttentionPlan(table.to(torch.int32).contiguous(), cfg, n_q_rows)


def _cached_plan(cu_seqlens_q, n_q_rows, n_heads, n_kv_heads, head_dim, dtype=None) -> AttentionPlan:
    """The plan for this cu_seqlens_q tensor, built once and kept on the tensor object itself.

    The model calls attention once per layer with the same cu_seqlens tensor; building the table
    costs ~10 small device ops, so per layer it would add up. Keyed by the tensor's identity (the
    attribute dies with it), shapes and config, and its version counter where it has one (inference
    tensors do not), so an in-place change outside inference mode rebuilds it."""
    try:
        version = cu_seqlens_q._version
    except RuntimeError:  # inference tensors track no version
        version = None
    capability = device_capability(cu_seqlens_q.device)
    key = (version, n_q_rows, n_heads, n_kv_heads, head_dim, dtype, capability, interpreting())
    cached = getattr(cu_seqlens_q, "_zkernels_attention_plan", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    plan = plan_attention(cu_seqlens_q, n_q_rows, n_heads, n_kv_heads, head_dim, dtype=dtype, capability=capability)
    try:
        cu_seqlens_q._zkernels_attention_plan = (key, plan)
    except (AttributeError, RuntimeError):
        pass
    return plan


def attention_triton(q, k, v, cu_seqlens_q, cu_seqlens_k, prefix_starts, prefix_lens, scale,
                     prefix_k=None, prefix_v=None, *, out=None, plan=None):
    """Triton attention_torch (see the module docstring). `out`: optional preallocated contiguous
    output; `plan`: optional plan_attention(...) result (default: built once per cu_seqlens_q tensor
    object and reused, see _cached_plan). Index tensors are not range-checked (that would need a
    device sync): they must describe rows that exist."""
    require_triton()
    if q.dim() != 3:
        raise ValueError(f"q must be [tokens, heads, head_dim], got {tuple(q.shape)}")
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"q must be float16, bfloat16 or float32, got {q.dtype}")
    Tq, Hq, D = q.shape
    if not is_pow2(D) or not 16 <= D <= 256:
        raise ValueError(f"head_dim must be a power of two in 16..256, got {D}")
    q, k, v, prefix_k, prefix_v, cu_q, cu_k, p_start, p_len, S = check_attention_inputs(
        q, k, v, cu_seqlens_q, cu_seqlens_k, prefix_starts, prefix_lens, prefix_k, prefix_v)
    Hkv = k.shape[1]
    check_same_device(q=q, k=k, v=v, prefix_k=prefix_k, prefix_v=prefix_v, cu_seqlens_q=cu_q,
                      cu_seqlens_k=cu_k, prefix_starts=p_start, prefix_lens=p_len)
    check_out("out", out, q.shape, q.dtype, q.device)
    if out is None:
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    if plan is None:
        plan = _cached_plan(cu_seqlens_q, Tq, Hq, Hkv, D, q.dtype)
    elif plan.n_q_rows != Tq or plan.config != attention_config(D, Hq // Hkv, q.dtype,
                                                                device_capability(q.device)):
        raise ValueError("plan was built for a different q shape, head layout or dtype: build it with "
                         "plan_attention(cu_seqlens_q, q.shape[0], n_heads, n_kv_heads, head_dim, dtype=q.dtype)")
    if Tq == 0 or S == 0:
        return out
    grid, args, kwargs = attention_launch(q, k, v, prefix_k, prefix_v, out, cu_q, cu_k, p_start, p_len, plan, scale)
    _attention_kernel[grid](*args, **kwargs)
    return out


def _aligned16(*tensors) -> bool:
    """Every tensor starts on 16 bytes and steps its rows and heads by multiples of 16 bytes."""
    return all(t.data_ptr() % 16 == 0 and all(st * t.element_size() % 16 == 0 for st in t.stride()[:2])
               for t in tensors)


def attention_launch(q, k, v, prefix_k, prefix_v, out, cu_q, cu_k, p_start, p_len, plan: AttentionPlan, scale):
    """What attention_triton launches for checked inputs: (grid, args, kwargs) of _attention_kernel.
    benchmarks/gpu_report.py compiles exactly this for each GPU target."""
    cfg, G, D = plan.config, q.shape[1] // k.shape[1], q.shape[2]
    grid = (plan.table.shape[0], k.shape[1])
    args = (q, k, v, prefix_k, prefix_v, out, cu_q, cu_k, p_start, p_len, plan.table,
            q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
            prefix_k.stride(0), prefix_k.stride(1), prefix_v.stride(0), prefix_v.stride(1),
            out.stride(0), out.stride(1), float(scale) * _LOG2E)
    kwargs = dict(G=G, TOKENS=cfg.tokens, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, HEAD_DIM=D,
                  PREC="ieee" if q.dtype == torch.float32 else "tf32",
                  KV_ALIGNED=_aligned16(k, v, prefix_k, prefix_v),
                  num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    return grid, args, kwargs


# ---------------------------------------------------------------------------------------------------
# C++ kernel (the "cpu" backend: zkernels._cpu_ops, csrc/cpu_*; see cpu_runtime.py)
# ---------------------------------------------------------------------------------------------------
from . import attention_inputs as _attention_inputs  # noqa: E402
from . import cpu_runtime as _cpu_runtime  # noqa: E402


def attention_supported(q: torch.Tensor) -> bool:
    """Whether attention_cpu takes this q (dtype, head_dim); the backend falls back to torch otherwise."""
    return _cpu_runtime.supported_dtype(q.dtype) and q.dim() == 3 and q.shape[2] % 16 == 0 and q.shape[2] > 0


def attention_cpu(q, k, v, cu_seqlens_q, cu_seqlens_k, prefix_starts, prefix_lens, scale, prefix_k=None,
                  prefix_v=None, *, isa: str | None = None):
    """C++ attention_torch: every sequence and head of the packed batch in one call, blocked online
    softmax in float32, the shared prefixes' keys prepared once per call."""
    ext = _cpu_runtime.extension()
    _cpu_runtime.check_float("q", q)
    if q.dim() != 3:
        raise ValueError(f"q must be [tokens, heads, head_dim], got {tuple(q.shape)}")
    D = q.shape[2]
    if D % 16 or D == 0:
        raise ValueError(f"head_dim must be a positive multiple of 16 for attention_cpu, got {D}")
    args = _attention_inputs.check_attention_inputs(q, k, v, cu_seqlens_q, cu_seqlens_k, prefix_starts, prefix_lens,
                                                    prefix_k, prefix_v)
    for name, t in zip(args._fields, args):
        if isinstance(t, torch.Tensor) and t.device.type != "cpu":
            raise ValueError(f"{name} is on {t.device}; the cpu backend's ops take CPU tensors")
    q, k, v, pk, pv, cu_q, cu_k, p_start, p_len, _ = args
    out = torch.empty(q.shape, dtype=q.dtype)
    ext.attention(q=q, k=k, v=v, prefix_k=pk, prefix_v=pv, out=out, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k,
                  prefix_starts=p_start, prefix_lens=p_len, scale=float(scale), isa=_cpu_runtime.resolve_isa(isa),
                  threads=_cpu_runtime.threads())
    return out
