"""Attention alone: zkernels' shared-prefix varlen kernel against torch SDPA on a padded batch.

Same request in both: one query prefix and its documents (one layer's attention, the model's head
layout). zkernels packs the prefix once and lets every document attend to it; SDPA (flash backend on
GPU) runs the usual padded batch of full prompts (prefix + document), causal. GQA: SDPA gets K/V
already expanded to the query heads (expansion not timed).
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


def bench_attention(cfg: dict, workload, device, dtype=torch.bfloat16, shape_name: str = "") -> list[dict]:
    from zkernels.kernels.attention import attention_triton, plan_attention

    on_gpu = str(device).startswith("cuda")
    hq, hkv, D = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    P = len(workload.query)
    args = packed_inputs(cfg, workload, device, dtype)
    q = args[0]
    plan = plan_attention(args[3], q.shape[0], hq, hkv, D)
    out = torch.empty_like(q)

    def ours():
        attention_triton(*args, out=out, plan=plan)

    def ours_with_plan():  # as the model calls it (block table built per call)
        attention_triton(*args, out=out)

    # Padded batch of full prompts for SDPA.
    n_docs = len(workload.docs)
    L = P + max(len(d) for d in workload.docs)
    qp = torch.randn(n_docs, hq, L, D, device=device, dtype=dtype)
    kp = torch.randn(n_docs, hq, L, D, device=device, dtype=dtype)
    vp = torch.randn(n_docs, hq, L, D, device=device, dtype=dtype)
    from torch.nn.attention import SDPBackend, sdpa_kernel
    backend = SDPBackend.FLASH_ATTENTION if on_gpu else SDPBackend.MATH

    def sdpa():
        with sdpa_kernel([backend]):
            torch.nn.functional.scaled_dot_product_attention(qp, kp, vp, is_causal=True)

    timer = (lambda fn: time_cuda_events(fn, warmup=3, reps=30)) if on_gpu else \
        (lambda fn: time_wall(fn, device, warmup=1, reps=2))
    t_ours, t_plan, t_sdpa = timer(ours), timer(ours_with_plan), timer(sdpa)

    flop_pair = 4 * D * hq
    ours_flops = flop_pair * (causal_pairs(P, P) + sum(causal_pairs(len(d), len(d)) + len(d) * P
                                                       for d in workload.docs))
    sdpa_useful = flop_pair * sum(causal_pairs(P + len(d), P + len(d)) for d in workload.docs)
    base = median(t_sdpa)
    rows = []
    for impl, times, flops, note in (
            ("zkernels_attention", t_ours, ours_flops, "plan (block table) prebuilt, as reused across layers"),
            ("zkernels_attention+plan", t_plan, ours_flops, "block table built inside the call"),
            ("torch_sdpa_" + ("flash" if on_gpu else "math"), t_sdpa, sdpa_useful,
             f"padded batch {n_docs}x{L}, causal, K/V expanded to {hq} heads; FLOPs on non-pad pairs")):
        rows.append(dict(workload=f"{workload.name}_attention", model_shape=shape_name, impl=impl,
                         median_ms=median(times), p99_ms=p99(times), baseline_median_ms=base,
                         speedup=base / median(times), achieved_tflops=flops / (median(times) * 1e-3) / 1e12,
                         flops=flops, n_docs=n_docs, n_reps=len(times), note=note))
    return rows
