"""The rows of a CPU BinaryIndex: numpy arrays searched by the C++ extension (numpy fallback without it).

A store is a snapshot: `append` and `remove` return a new store and never change a row that this one
shows, so a search can run on the store it read while another thread mutates the index (BinaryIndex
serialises the mutations and publishes each new store). To make appends amortised O(m), the new
store may share this one's buffers: the buffers are longer than n and only rows < n are visible, so
an append writes past n and the new store simply shows more rows. Read-only buffers (a memory-mapped
index file) are copied into memory on the first append.
"""
from __future__ import annotations

import numpy as np

from . import _cpu
from .inputs import codes_numpy, is_tensor


class NumpyStore:
    device = "cpu"

    def __init__(self, code_size: int, codes: np.ndarray | None = None, ids: np.ndarray | None = None,
                 n: int | None = None):
        self.code_size = code_size
        self._codes = np.empty((0, code_size), np.uint8) if codes is None else codes
        self._ids = np.empty(0, np.int64) if ids is None else ids
        self._n = len(self._ids) if n is None else n

    def __len__(self) -> int:
        return self._n

    @property
    def codes(self) -> np.ndarray:
        return self._codes[:self._n]

    @property
    def ids(self) -> np.ndarray:
        return self._ids[:self._n]

    # ------------------------------------------------------------------ mutations (return a new store)
    def check_codes(self, x, name) -> np.ndarray:
        return codes_numpy(x, self.code_size, name)

    def append(self, codes: np.ndarray, ids: np.ndarray) -> NumpyStore:
        n, m = self._n, len(ids)
        buf_c, buf_i = self._codes, self._ids
        if n + m > len(buf_i) or not buf_c.flags.writeable or not buf_i.flags.writeable:
            cap = max(n + m, 2 * n, 1024)
            new_c = np.empty((cap, self.code_size), np.uint8)
            new_i = np.empty(cap, np.int64)
            new_c[:n] = buf_c[:n]
            new_i[:n] = buf_i[:n]
            buf_c, buf_i = new_c, new_i
        buf_c[n:n + m] = codes  # rows >= n: invisible to every existing store
        buf_i[n:n + m] = ids
        return NumpyStore(self.code_size, buf_c, buf_i, n + m)

    def remove(self, ids: np.ndarray) -> tuple[NumpyStore, int]:
        keep = ~np.isin(self.ids, ids)
        removed = int(self._n - keep.sum())
        if not removed:
            return self, 0
        return NumpyStore(self.code_size, np.ascontiguousarray(self.codes[keep]),
                          np.ascontiguousarray(self.ids[keep])), removed

    def cleared(self) -> NumpyStore:
        return NumpyStore(self.code_size)

    # ------------------------------------------------------------------ reads
    def search(self, query_codes, k: int, num_threads: int | None):
        """Top-k per topk_contract.py; numpy in -> numpy out, torch tensor in -> CPU tensors out."""
        q = codes_numpy(query_codes, self.code_size, "query_codes")
        d, i = _cpu.search(self.codes, self.ids, q, k, num_threads)
        if is_tensor(query_codes):
            import torch

            return torch.from_numpy(d), torch.from_numpy(i)
        return d, i

    def as_tensor(self, ids):
        """Candidate ids from `search` as the int64 tensor rescoring works on."""
        import torch

        return ids if is_tensor(ids) else torch.from_numpy(np.asarray(ids))

    def like_query(self, query_codes, scores, ids):
        """Rescored (CPU tensor) results in the query's kind: numpy for numpy queries."""
        return (scores, ids) if is_tensor(query_codes) else (scores.numpy(), ids.numpy())

    def unpack_rows(self, ids_t):
        """0/1 float bits [len(ids), num_bits] of the rows holding the given ids (each must be stored)."""
        import torch

        codes, ids = self.codes, self.ids
        order = np.argsort(ids, kind="stable")
        rows = order[np.searchsorted(ids[order], ids_t.cpu().numpy())]
        return torch.from_numpy(np.unpackbits(codes[rows], axis=1).astype(np.float32))

    def to_numpy(self) -> tuple[np.ndarray, np.ndarray]:
        """(codes, ids) as numpy arrays, for saving and for moving to another device."""
        return self.codes, self.ids
