"""BinaryIndex: exact top-k Hamming search over packed binary codes, on CPU or a CUDA device.

Contract (identical on both devices):
  * codes are uint8 [n, d / 8] (what `quantize(..., "ubinary")` returns); d (num_bits) is any
    positive multiple of 8. Wrong dtype, rank or width -> ValueError. Non-contiguous inputs are
    copied to contiguous ones (results are the same as for a contiguous copy).
  * `add` assigns consecutive ids continuing from the largest id ever added (0, 1, 2, ... for an
    index only fed by `add`); `add_with_ids` stores arbitrary int64 ids. An `add` whose ids would
    pass 2**63 - 1 raises ValueError and changes nothing.
  * `search(q, k)` -> HammingResult(distances int32 [nq, k], ids int64 [nq, k]): LOWEST distance
    first, ordered and filled as topk_contract.py says. numpy in -> numpy out; torch in (CPU index)
    -> torch out; a CUDA index returns CUDA tensors.
  * `search_rescored(q, k, float_queries, corpus)` (or the older `search(q, k, rescore=...)`) ->
    RescoredResult(scores float32 [nq, k], ids int64 [nq, k]): HIGHEST score first (rescore.py);
    default candidates = k * DEFAULT_RESCORE_MULTIPLIER (4).

The rows live in a store, one class per device family, each readable alone: numpy_store.py (CPU,
C++ kernel) and torch_store.py (CUDA). This class validates, hands out ids and persists.
Thread safety: searches may run concurrently from several threads (the C++ kernel releases the GIL);
mutations take a lock and publish a new store, never changing rows a running search can see.
"""
from __future__ import annotations

import numbers
import threading
from typing import NamedTuple

import numpy as np

from . import storage
from .inputs import INT64_MAX, check_positive_int, ids_numpy
from .numpy_store import NumpyStore

# sentence-transformers' semantic_search_usearch uses 4 (semantic_search_faiss, in 6.2, uses 2).
DEFAULT_RESCORE_MULTIPLIER = 4


class HammingResult(NamedTuple):
    """Plain search: Hamming distances, lowest first, and the ids they belong to."""
    distances: object
    ids: object


class RescoredResult(NamedTuple):
    """Rescored search: float dot-product scores, highest first, and the ids they belong to."""
    scores: object
    ids: object


class BinaryIndex:
    def __init__(self, num_bits: int, *, num_threads: int | None = None):
        if isinstance(num_bits, bool) or not isinstance(num_bits, numbers.Integral) or num_bits <= 0 or num_bits % 8:
            raise ValueError(f"num_bits must be a positive multiple of 8, got {num_bits!r}")
        if num_threads is not None:
            check_positive_int(num_threads, "num_threads")
        self.num_bits = int(num_bits)
        self.code_size = self.num_bits // 8
        self.num_threads = num_threads
        self._lock = threading.Lock()  # serialises mutations; searches read self._store without it
        self._next_id = 0  # the next automatic id; 2**63 once add_with_ids stored the int64 maximum
        self._store = NumpyStore(self.code_size)

    @classmethod
    def _from_store(cls, num_bits, store, next_id, num_threads=None) -> BinaryIndex:
        index = cls(num_bits, num_threads=num_threads)
        index._store, index._next_id = store, next_id
        return index

    # ------------------------------------------------------------------ shape (FAISS names too)
    @property
    def d(self) -> int:
        """Bits per code (FAISS's name for num_bits)."""
        return self.num_bits

    @property
    def device(self) -> str:
        return self._store.device

    def __len__(self):
        return len(self._store)

    @property
    def ntotal(self) -> int:
        """Number of stored codes (FAISS's name for len(index))."""
        return len(self._store)

    def __repr__(self):
        return f"BinaryIndex(num_bits={self.num_bits}, n={len(self)}, device={self.device!r})"

    # ------------------------------------------------------------------ mutations
    def add(self, codes):
        """Appends codes with consecutive ids continuing from the largest id added so far; raises
        ValueError (and adds nothing) if those ids would pass 2**63 - 1: use add_with_ids then."""
        self._append(codes, None)

    def add_with_ids(self, codes, ids):
        """Appends codes with the given int64 ids (duplicates allowed; remove_ids removes all)."""
        self._append(codes, ids)

    def _append(self, codes, ids):
        codes = self._store.check_codes(codes, "codes")
        m = len(codes)
        if ids is not None:
            ids = ids_numpy(ids, m)
        with self._lock:
            if m == 0:
                return
            if ids is None:
                ids = self._automatic_ids(m)
            self._store = self._store.append(codes, ids)
            self._next_id = max(self._next_id, int(ids.max()) + 1)

    def _automatic_ids(self, m: int) -> np.ndarray:
        last = self._next_id + m - 1
        if last > INT64_MAX:
            left = INT64_MAX - self._next_id + 1
            raise ValueError(f"add() of {m} codes would need automatic ids up to {last}, past the int64 maximum "
                             f"2**63 - 1 (next automatic id {self._next_id}, {max(left, 0)} left); nothing was "
                             "added: give the ids yourself with add_with_ids")
        return np.arange(self._next_id, self._next_id + m, dtype=np.int64)

    def reset(self):
        with self._lock:
            self._next_id = 0
            self._store = self._store.cleared()

    def remove_ids(self, ids) -> int:
        """Removes every stored row whose id is in ids; returns how many rows were removed."""
        ids = np.unique(ids_numpy(ids, -1))
        with self._lock:
            self._store, removed = self._store.remove(ids)
            return removed

    # ------------------------------------------------------------------ search
    def search(self, query_codes, k, *, rescore=None, candidates=None, num_threads=None):
        """Exact top-k by Hamming distance: HammingResult(distances, ids), lowest distance first.

        With rescore= (float_queries, or (float_queries, float_corpus_or_callable)) this is
        search_rescored and returns RescoredResult(scores, ids), HIGHEST score first; prefer calling
        search_rescored, whose name and result say so."""
        k = check_positive_int(k)
        if rescore is not None:
            if isinstance(rescore, tuple):
                if len(rescore) != 2:
                    raise ValueError("rescore must be float_queries or (float_queries, float_corpus_or_callable)")
                float_queries, corpus = rescore
            else:
                float_queries, corpus = rescore, None
            return self.search_rescored(query_codes, k, float_queries, corpus, candidates=candidates,
                                        num_threads=num_threads)
        if candidates is not None:
            raise ValueError("candidates= only applies together with rescore=")
        return HammingResult(*self._store.search(query_codes, k, self._threads(num_threads)))

    def search_rescored(self, query_codes, k, float_queries, corpus=None, *, candidates=None,
                        num_threads=None) -> RescoredResult:
        """Hamming candidates rescored by float dot products: RescoredResult(scores float32 [nq, k],
        ids int64 [nq, k]), HIGHEST score first, ties by the smaller id, (-inf, -1) fill.

        The `candidates` nearest codes by Hamming distance (default k * DEFAULT_RESCORE_MULTIPLIER)
        are scored against `float_queries` [nq, dim]; `corpus` gives the float vectors by id (an
        array [N, dim], a callable ids -> [len(ids), dim], or None for the codes' own 0/1 bits)."""
        from .rescore import rescore

        k = check_positive_int(k)
        c = k * DEFAULT_RESCORE_MULTIPLIER if candidates is None else check_positive_int(candidates, "candidates")
        if c < k:
            raise ValueError(f"candidates ({c}) must be >= k ({k})")
        store = self._store  # one snapshot for the candidates and the rows they point to
        _, cand = store.search(query_codes, c, self._threads(num_threads))
        scores, ids = rescore(store.as_tensor(cand), float_queries, corpus, k, store.unpack_rows)
        return RescoredResult(*store.like_query(query_codes, scores, ids))

    def _threads(self, num_threads):
        threads = num_threads if num_threads is not None else self.num_threads
        return None if threads is None else check_positive_int(threads, "num_threads")

    # ------------------------------------------------------------------ devices
    def to(self, device):
        """A copy of this index on `device` ("cpu", "cuda", "cuda:1", torch.device); self if already there."""
        import torch

        from .torch_store import TorchStore

        dev = torch.device(device)
        if dev.type not in ("cpu", "cuda"):
            raise ValueError(f"BinaryIndex supports cpu and cuda devices, got {device!r}")
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("BinaryIndex.to('cuda'): no CUDA device is available")
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        if str(dev) == self.device:
            return self
        store = self._store
        if dev.type == "cpu":
            codes, ids = store.to_numpy()
            new = NumpyStore(self.code_size, np.array(codes), np.array(ids))
        elif isinstance(store, TorchStore):
            new = TorchStore(self.code_size, store.codes.to(dev), store.ids.to(dev))
        else:
            new = TorchStore(self.code_size, torch.from_numpy(np.array(store.codes)).to(dev),
                             torch.from_numpy(np.array(store.ids)).to(dev))
        return BinaryIndex._from_store(self.num_bits, new, self._next_id, self.num_threads)

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    # ------------------------------------------------------------------ persistence
    def save(self, path):
        """Writes the index atomically (temp file + fsync + rename), with the permissions a new file
        gets in that folder (0644 under the usual umask); format in storage.py."""
        with self._lock:
            store, next_id = self._store, self._next_id
        codes, ids = store.to_numpy()
        storage.save(path, self.num_bits, ids, codes, next_id)

    @classmethod
    def load(cls, path, mmap: bool = True, verify: bool = True, *, num_threads=None):
        """Reads a saved index; mmap=True maps the file read-only (adding copies it into memory).

        Always checked: the header (magic, version, header checksum, num_bits), the exact file size,
        and the automatic-id counter (next_id at most 2**63 and above every stored id, which reads
        the ids: 8 bytes per code). verify=False skips only the payload crc32, i.e. reading every
        code byte; a file altered inside its codes then loads and searches with wrong codes. A bad
        file raises storage.IndexFileError (a ValueError)."""
        num_bits, ids, codes, next_id = storage.load(path, mmap=mmap, verify=verify)
        return cls._from_store(num_bits, NumpyStore(num_bits // 8, codes, ids), next_id, num_threads)
