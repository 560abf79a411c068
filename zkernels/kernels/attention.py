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
