"""Pure-numpy exact Hamming top-k: the fallback when the C++ extension is not built.

Same signature as the extension's `search`, same result (int32 distances [nq, k], int64 ids [nq, k],
ordered and filled as topk_contract.py says). Slow (a byte lookup table and a full sort per query);
it exists so the package never fails to import, not for speed.
"""
from __future__ import annotations

import numpy as np

from .topk_contract import FILL_DISTANCE, FILL_ID

_POPCOUNT = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(axis=1).astype(np.int32)


def distances(db: np.ndarray, queries: np.ndarray, rows_per_chunk: int = 1 << 14) -> np.ndarray:
    out = np.empty((len(queries), len(db)), dtype=np.int32)
    for s in range(0, len(db), rows_per_chunk):
        block = db[s:s + rows_per_chunk]
        for qi, q in enumerate(queries):
            out[qi, s:s + len(block)] = _POPCOUNT[block ^ q].sum(axis=1)
    return out


def search(db, ids, queries, k, num_threads=0, isa="auto"):  # signature mirrors the extension
    nq, n = len(queries), len(db)
    out_d = np.full((nq, k), FILL_DISTANCE, dtype=np.int32)
    out_i = np.full((nq, k), FILL_ID, dtype=np.int64)
    if nq == 0 or n == 0:
        return out_d, out_i
    keep = min(k, n)
    for s in range(0, nq, 64):
        dist = distances(db, queries[s:s + 64])
        for j, row in enumerate(dist):
            order = np.lexsort((ids, row))[:keep]  # distance, then the tie rule (smaller id)
            out_d[s + j, :keep] = row[order]
            out_i[s + j, :keep] = ids[order]
    return out_d, out_i
