"""Float rescoring of Hamming candidates (the second stage of binary retrieval).

The Hamming search returns `candidates` ids per query (default k * DEFAULT_RESCORE_MULTIPLIER); each
is scored by the dot product of the float query with a float vector for that id, and the best k by
score are returned: descending score (the opposite direction of a Hamming search's distances), with
the tie rule and fill id of topk_contract.py and a -inf score fill when fewer than k exist.

Where the float corpus vectors come from:
  * an array [N, dim] indexed by the stored id (ids must lie in [0, N)),
  * a callable ids -> [len(ids), dim] (given unique ids, as numpy for a CPU index, a tensor for CUDA),
  * nothing: the index's own bits as 0/1 floats, trimmed to the query's dim — exactly what
    sentence-transformers' semantic_search_faiss/usearch do when rescoring a binary corpus.
"""
from __future__ import annotations

import torch


def _as_float_tensor(x, name, device):
    t = torch.as_tensor(x) if not isinstance(x, torch.Tensor) else x
    if not t.is_floating_point():
        raise ValueError(f"{name} must be floating-point, got dtype {t.dtype}")
    return t.to(device=device, dtype=torch.promote_types(t.dtype, torch.float32))


def rescore(cand_ids, float_queries, corpus, k, unpack_rows):
    """cand_ids int64 tensor [nq, c] (-1 = none); returns (float32 scores [nq, k], int64 ids [nq, k]).

    unpack_rows(ids tensor) -> 0/1 float tensor [len(ids), num_bits], used when corpus is None.
    """
    dev = cand_ids.device
    fq = _as_float_tensor(float_queries, "rescore float queries", dev)
    nq, c = cand_ids.shape
    if fq.dim() != 2 or fq.shape[0] != nq:
        raise ValueError(f"rescore float queries must be 2-D with one row per query ({nq}), got {tuple(fq.shape)}")
    dim = fq.shape[1]
    valid = cand_ids >= 0
    flat = cand_ids[valid]
    if corpus is None:
        vecs = unpack_rows(flat)
        if dim > vecs.shape[1]:
            raise ValueError(f"float queries have {dim} dims but the codes only {vecs.shape[1]} bits")
        vecs = vecs[:, :dim].to(fq.dtype)
    elif callable(corpus):
        uniq, inverse = torch.unique(flat, return_inverse=True)
        arg = uniq.cpu().numpy() if dev.type == "cpu" else uniq
        got = _as_float_tensor(corpus(arg), "the rescore callable's result", dev).to(fq.dtype)
        if got.dim() != 2 or got.shape != (len(uniq), dim):
            raise ValueError(f"the rescore callable must return [{len(uniq)}, {dim}] floats, got {tuple(got.shape)}")
        vecs = got[inverse]
    else:
        fc = _as_float_tensor(corpus, "rescore float corpus", dev).to(fq.dtype)
        if fc.dim() != 2 or fc.shape[1] != dim:
            raise ValueError(f"rescore float corpus must be [N, {dim}], got {tuple(fc.shape)}")
        if len(flat) and (int(flat.min()) < 0 or int(flat.max()) >= fc.shape[0]):
            raise ValueError("rescore float corpus is indexed by id, but some ids fall outside [0, N)")
        vecs = fc[flat]
    full = torch.zeros((nq, c, dim), dtype=fq.dtype, device=dev)
    full[valid] = vecs
    scores = torch.einsum("qd,qcd->qc", fq, full)
    scores = scores.masked_fill(~valid, float("-inf"))
    # Order: descending score, then the tie rule (stable sort by id first, then by score).
    by_id = torch.sort(torch.where(valid, cand_ids, torch.iinfo(torch.int64).max), dim=1, stable=True).indices
    s1 = scores.gather(1, by_id)
    by_score = torch.sort(-s1, dim=1, stable=True).indices
    order = by_id.gather(1, by_score)[:, :k]
    out_s = scores.gather(1, order).to(torch.float32)
    out_i = cand_ids.gather(1, order)
    if out_s.shape[1] < k:  # fewer candidates than k
        pad = k - out_s.shape[1]
        out_s = torch.cat([out_s, torch.full((nq, pad), float("-inf"), device=dev)], dim=1)
        out_i = torch.cat([out_i, torch.full((nq, pad), -1, dtype=torch.int64, device=dev)], dim=1)
    return out_s, out_i
