"""Exact Hamming top-k on torch tensors: the selection used by the CUDA path, plus a plain-torch
distance function (the GPU benchmark's baseline, and what lets the selection be tested on CPU).

Results follow topk_contract.py. Rows must be stored in ascending id order (torch_store.py keeps
them so); then its tie rule (smaller id first) is "smaller row first", which stable sorts give.
"""
from __future__ import annotations

import torch

from .topk_contract import FILL_DISTANCE, FILL_ID

_LUT = {}


def torch_distances(queries: torch.Tensor, codes: torch.Tensor, budget_bytes: int = 1 << 28) -> torch.Tensor:
    """int32 [nq, n] Hamming distances with plain torch ops (xor + byte popcount table)."""
    dev = codes.device
    lut = _LUT.get(dev)
    if lut is None:
        lut = torch.tensor([bin(i).count("1") for i in range(256)], dtype=torch.uint8, device=dev)
        _LUT[dev] = lut
    nq, n, w = queries.shape[0], codes.shape[0], codes.shape[1]
    out = torch.empty((nq, n), dtype=torch.int32, device=dev)
    rows = max(1, budget_bytes // max(1, nq * w))
    for s in range(0, n, rows):
        x = queries[:, None, :] ^ codes[None, s:s + rows, :]
        out[:, s:s + rows] = lut[x.long()].sum(dim=-1, dtype=torch.int32)
    return out


def select_topk(dist: torch.Tensor, k: int, max_distance: int):
    """(int32 distances [nq, kk], int64 rows [nq, kk]) of the kk = min(k, n) smallest per query,
    ties by smaller row. Exact with any number of ties: every row at the k-th distance is a
    candidate, then a stable sort orders them."""
    nq, n = dist.shape
    kk = min(k, n)
    if kk == n:
        vals, rows = torch.sort(dist, dim=1, stable=True)
        return vals, rows
    kth = torch.topk(dist, kk, dim=1, largest=False, sorted=False).values.amax(dim=1)
    mask = dist <= kth[:, None]
    qi, rows = mask.nonzero(as_tuple=True)  # row-major: by query, then ascending row
    dv = dist[qi, rows].to(torch.int64)
    order = torch.sort(qi * (max_distance + 1) + dv, stable=True).indices
    rows, dv = rows[order], dv[order]
    counts = mask.sum(dim=1)
    starts = torch.cumsum(counts, 0) - counts
    take = starts[:, None] + torch.arange(kk, device=dist.device)[None, :]
    return dv[take].to(torch.int32), rows[take]


def search(codes, ids_sorted, queries, k, num_bits, distance_fn=torch_distances, budget_bytes=1 << 30):
    """Top-k over codes whose ids_sorted are ascending. Queries are processed in chunks so the
    [chunk, n] distance matrix stays within budget_bytes."""
    nq, n = queries.shape[0], codes.shape[0]
    dev = codes.device
    out_d = torch.full((nq, k), FILL_DISTANCE, dtype=torch.int32, device=dev)
    out_i = torch.full((nq, k), FILL_ID, dtype=torch.int64, device=dev)
    if nq == 0 or n == 0:
        return out_d, out_i
    kk = min(k, n)
    chunk = max(1, min(nq, budget_bytes // (4 * n)))
    for s in range(0, nq, chunk):
        d = distance_fn(queries[s:s + chunk], codes)
        vals, rows = select_topk(d, kk, num_bits)
        out_d[s:s + chunk, :kk] = vals
        out_i[s:s + chunk, :kk] = ids_sorted[rows]
    return out_d, out_i
