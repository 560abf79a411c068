"""Attention alone: zkernels' shared-prefix varlen kernel against flash attention's varlen kernel on the same
packed prompts.

Same request, one layer's attention, the model's head layout in both. zkernels packs the query prefix once
and lets every document attend to it. The baseline (torch.nn.attention.varlen.varlen_attn, flash, causal)
gets each full prompt (prefix + document) packed without padding, with GQA native (K/V keep their kv
heads, nothing is copied to the query heads): the same work a shared-prefix-unaware varlen engine does.
Without CUDA (the --smoke run) the baseline is attention_torch over the same packed prompts.
"""
from __future__ import annotations

import torch
from bench_common import causal_pairs, median, p99, time_cuda_events, time_wall


def packed_inputs(cfg: dict, workload, device, dtype):
    """q/k/v packed as the model packs them: sequence 0 = the query prefix, then each document with
    prefix_starts 0 / prefix_lens = len(prefix)."""
    hq, hkv, D = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    P = len(workload.query)
    lens = [P] + [len(d) for d in workload.docs]
    T = sum(lens)
    cu = torch.tensor([0] + lens, dtype=torch.int64).cumsum(0).to(torch.int32).to(device)
    p_starts = torch.zeros(len(lens), dtype=torch.int32, device=device)
    p_lens = torch.tensor([0] + [P] * len(workload.docs), dtype=torch.int32, device=device)
    q = torch.randn(T, hq, D, device=device, dtype=dtype)
    k = torch.randn(T, hkv, D, device=device, dtype=dtype)
    v = torch.randn(T, hkv, D, device=device, dtype=dtype)
    return q, k, v, cu, cu, p_starts, p_lens, D ** -0.5


def packed_prompts(cfg: dict, workload, device, dtype):
    """The baseline's inputs: every full prompt (prefix + document) packed back to back, no padding."""
    hq, hkv, D = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    lens = [len(workload.query) + len(d) for d in workload.docs]
    cu = torch.tensor([0] + lens, dtype=torch.int64).cumsum(0).to(torch.int32).to(device)
    T = sum(lens)
    q = torch.randn(T, hq, D, device=device, dtype=dtype)
    k = torch.randn(T, hkv, D, device=device, dtype=dtype)
    v = torch.randn(T, hkv, D, device=device, dtype=dtype)
    return q, k, v, cu, max(lens)


def bench_attention(cfg: dict, workload, device, dtype=torch.bfloat16, shape_name: str = "") -> list[dict]:
    from zkernels.kernels.attention import attention_torch, attention_triton, plan_attention

    on_gpu = str(device).startswith("cuda")
    hq, hkv, D = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    P = len(workload.query)
    args = packed_inputs(cfg, workload, device, dtype)
    q, cu = args[0], args[3]
    plan = plan_attention(cu, q.shape[0], hq, hkv, D, dtype=dtype)
    out = torch.empty_like(q)

    def ours():
        attention_triton(*args, out=out, plan=plan)

    def ours_with_plan():  # the block table built inside the timed call (an explicit plan: no cached one)
        attention_triton(*args, out=out, plan=plan_attention(cu, q.shape[0], hq, hkv, D, dtype=dtype))

    bq, bk, bv, bcu, max_len = packed_prompts(cfg, workload, device, dtype)
    if on_gpu:
        from torch.nn.attention.varlen import varlen_attn

        def baseline():
            varlen_attn(bq, bk, bv, bcu, bcu, max_len, max_len, scale=D ** -0.5, window_size=(-1, 0),
                        enable_gqa=hq != hkv)
        base_name, base_note = "flash_varlen", "torch varlen_attn (flash), causal, GQA native"
    else:
        zeros = torch.zeros(len(workload.docs), dtype=torch.int32, device=device)

        def baseline():
            attention_torch(bq, bk, bv, bcu, bcu, zeros, zeros, D ** -0.5)
        base_name, base_note = "torch_varlen_reference", "attention_torch (no GPU)"

    timer = (lambda fn: time_cuda_events(fn, warmup=3, reps=30)) if on_gpu else \
        (lambda fn: time_wall(fn, device, warmup=1, reps=2))
    t_ours, t_plan, t_base = timer(ours), timer(ours_with_plan), timer(baseline)

    flop_pair = 4 * D * hq
    ours_flops = flop_pair * (causal_pairs(P, P) + sum(causal_pairs(len(d), len(d)) + len(d) * P
                                                       for d in workload.docs))
    base_flops = flop_pair * sum(causal_pairs(P + len(d), P + len(d)) for d in workload.docs)
    base = median(t_base)
    rows = []
    for impl, times, flops, note in (
            ("zkernels_attention", t_ours, ours_flops, "plan (block table) prebuilt, as reused across layers"),
            ("zkernels_attention+plan", t_plan, ours_flops, "block table built inside the timed call"),
            (base_name, t_base, base_flops,
             f"{base_note}; {len(workload.docs)} full prompts (prefix + document) packed, {int(bcu[-1])} rows, "
             "no padding; the prefix is recomputed per prompt")):
        rows.append(dict(workload=f"{workload.name}_attention", model_shape=shape_name, impl=impl,
                         median_ms=median(times), p99_ms=p99(times), baseline_median_ms=base,
                         speedup=base / median(times), achieved_tflops=flops / (median(times) * 1e-3) / 1e12,
                         flops=flops, n_docs=len(workload.docs), n_reps=len(times), note=note))
    return rows
