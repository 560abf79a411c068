"""TEMPORARY stand-in for zkernels.binary (issue 4, another engineer's work, not merged yet).

Brute-force numpy implementation of exactly the subset the Pipeline uses, with the contract issue 4
fixes: quantize(embeddings, "ubinary"|"binary") bit-exact with sentence-transformers (bit = value > 0,
np.packbits big-endian; binary = ubinary - 128 as int8); BinaryIndex(num_bits) with add(uint8 codes
[n, num_bits/8]), search(query_codes, k) -> (int32 distances [nq, k], int64 ids [nq, k]) in ascending
distance, ties by the smaller id, (2**31 - 1, -1) fill when k > n; len; save(path) to one file;
BinaryIndex.load(path, mmap=True). No rescore= here: the Pipeline rescores candidates itself.
At merge, pipeline.py's single import line switches to zkernels.binary and this file is deleted.
"""
from __future__ import annotations

import numpy as np

FILL_DISTANCE = 2 ** 31 - 1
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.int32)


def quantize(embeddings, precision: str = "ubinary") -> np.ndarray:
    if precision not in ("ubinary", "binary"):
        raise ValueError(f"precision must be 'ubinary' or 'binary', got {precision!r}")
    bits = np.packbits(np.asarray(embeddings) > 0, axis=-1)
    return bits if precision == "ubinary" else (bits.astype(np.int16) - 128).astype(np.int8)


class BinaryIndex:
    def __init__(self, num_bits: int):
        if not isinstance(num_bits, int) or num_bits <= 0 or num_bits % 8:
            raise ValueError(f"num_bits must be a positive multiple of 8, got {num_bits!r}")
        self.num_bits = num_bits
        self._codes = np.zeros((0, num_bits // 8), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._codes)

    def _check(self, codes, name):
        codes = np.asarray(codes)
        if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] != self.num_bits // 8:
            raise ValueError(f"{name} must be uint8 [n, {self.num_bits // 8}], got {codes.dtype} {list(codes.shape)}")
        return codes

    def add(self, codes) -> None:
        self._codes = np.concatenate([self._codes, self._check(codes, "codes")])

    def search(self, query_codes, k: int):
        q = self._check(query_codes, "query_codes")
        dist = np.full((len(q), k), FILL_DISTANCE, dtype=np.int32)
        ids = np.full((len(q), k), -1, dtype=np.int64)
        m = min(k, len(self))
        for r, row in enumerate(q):
            d = _POPCOUNT[np.bitwise_xor(self._codes, row)].sum(axis=1)
            order = np.lexsort((np.arange(len(d)), d))[:m]  # by distance, then by id
            dist[r, :m], ids[r, :m] = d[order], order
        return dist, ids

    def save(self, path) -> None:
        with open(path, "wb") as f:
            np.save(f, self._codes)

    @classmethod
    def load(cls, path, mmap: bool = True) -> "BinaryIndex":
        codes = np.load(path, mmap_mode="r" if mmap else None)
        index = cls(codes.shape[1] * 8)
        index._codes = codes
        return index
