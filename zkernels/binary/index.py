"""BinaryIndex: exact top-k Hamming search over packed binary codes, on CPU or a CUDA device.

Contract (identical on both devices):
  * codes are uint8 [n, num_bits / 8] (what `quantize(..., "ubinary")` returns); num_bits is any
    positive multiple of 8. Wrong dtype, rank or width -> ValueError. Non-contiguous inputs are
    copied to contiguous ones (results are the same as for a contiguous copy).
  * `add` assigns consecutive ids continuing from the largest id ever added (0, 1, 2, ... for an
    index only fed by `add`); `add_with_ids` stores arbitrary int64 ids.
  * `search(q, k)` -> (int32 distances [nq, k], int64 ids [nq, k]): ascending distance, ties broken
    by the smaller stored id, (FILL_DISTANCE = 2**31 - 1, -1) fill when k > n. numpy in -> numpy
    out; torch in (CPU index) -> torch out; a CUDA index returns CUDA tensors.
  * rescore: see rescore.py; default candidates = k * DEFAULT_RESCORE_MULTIPLIER (4).
Thread safety: searches may run concurrently from several threads (the C++ kernel releases the GIL);
mutations take a lock and never modify rows a running search can see (growth reallocates,
removal builds new arrays).
"""
from __future__ import annotations

import numbers
import threading

import numpy as np

from . import _cpu, storage

FILL_DISTANCE = _cpu.FILL_DISTANCE
# sentence-transformers' semantic_search_usearch uses 4 (semantic_search_faiss, in 6.2, uses 2).
DEFAULT_RESCORE_MULTIPLIER = 4


def _is_tensor(x):
    return type(x).__module__.startswith("torch") and hasattr(x, "is_cuda")


def _check_k(k, name="k"):
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"{name} must be a positive integer, got {k!r}")
    return int(k)


def _codes_numpy(x, width, name):
    """Validated C-contiguous uint8 [m, width] numpy array (torch tensors are moved to the host)."""
    if _is_tensor(x):
        import torch

        if x.dtype != torch.uint8:
            raise ValueError(f"{name} must have dtype uint8 (packed bits, precision='ubinary'), got {x.dtype}")
        x = x.detach().cpu().numpy()
    elif not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a numpy array or torch tensor of uint8, got {type(x).__name__}")
    if x.dtype != np.uint8:
        raise ValueError(f"{name} must have dtype uint8 (packed bits, precision='ubinary'), got {x.dtype}")
    if x.ndim != 2 or x.shape[1] != width:
        raise ValueError(f"{name} must have shape [m, {width}] ({width * 8} bits per code), got {x.shape}")
    return np.ascontiguousarray(x)


def _ids_numpy(ids, m):
    if _is_tensor(ids):
        ids = ids.detach().cpu().numpy()
    ids = np.asarray(ids)
    if ids.dtype == np.bool_ or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids must be integers, got dtype {ids.dtype}")
    if ids.ndim != 1 or len(ids) != m:
        raise ValueError(f"ids must be 1-D with one id per code ({m}), got shape {ids.shape}")
    if ids.dtype == np.uint64 and len(ids) and ids.max() > np.iinfo(np.int64).max:
        raise ValueError("ids must fit in int64")
    return np.ascontiguousarray(ids, dtype=np.int64)


class BinaryIndex:
    def __init__(self, num_bits: int, *, num_threads: int | None = None):
        if isinstance(num_bits, bool) or not isinstance(num_bits, numbers.Integral) or num_bits <= 0 or num_bits % 8:
            raise ValueError(f"num_bits must be a positive multiple of 8, got {num_bits!r}")
        if num_threads is not None:
            _check_k(num_threads, "num_threads")
        self.num_bits = int(num_bits)
        self.code_size = self.num_bits // 8
        self.num_threads = num_threads
        self._lock = threading.Lock()
        self._device = "cpu"
        self._next_id = 0
        self._set_cpu(np.empty((0, self.code_size), np.uint8), np.empty(0, np.int64))

    # ------------------------------------------------------------------ storage
    def _set_cpu(self, codes, ids):
        # Buffers may be larger than n (amortised growth); rows >= n are never read by a search.
        self._codes, self._ids, self._n = codes, ids, len(ids)

    def _snapshot(self):
        with self._lock:
            return self._codes[:self._n], self._ids[:self._n]

    @property
    def device(self):
        return self._device

    def __len__(self):
        return self._n

    @property
    def ntotal(self):
        return self._n

    def __repr__(self):
        return f"BinaryIndex(num_bits={self.num_bits}, n={self._n}, device={self._device!r})"

    def add(self, codes):
        """Appends codes with consecutive ids continuing from the largest id added so far."""
        self._append(codes, None)

    def add_with_ids(self, codes, ids):
        """Appends codes with the given int64 ids (duplicates allowed; remove_ids removes all)."""
        self._append(codes, ids)

    def _append(self, codes, ids):
        if self._device != "cpu":
            return self._append_torch(codes, ids)
        codes = _codes_numpy(codes, self.code_size, "codes")
        m = len(codes)
        if ids is not None:
            ids = _ids_numpy(ids, m)
        with self._lock:
            if ids is None:
                ids = np.arange(self._next_id, self._next_id + m, dtype=np.int64)
            if m == 0:
                return
            n = self._n
            buf_c, buf_i = self._codes, self._ids
            if n + m > len(buf_i) or not buf_c.flags.writeable:
                cap = max(n + m, 2 * n, 1024)
                new_c = np.empty((cap, self.code_size), np.uint8)
                new_i = np.empty(cap, np.int64)
                new_c[:n] = buf_c[:n]
                new_i[:n] = buf_i[:n]
                buf_c, buf_i = new_c, new_i
            buf_c[n:n + m] = codes  # rows beyond n: invisible to searches already running
            buf_i[n:n + m] = ids
            self._set_cpu(buf_c, buf_i)
            self._n = n + m
            self._next_id = max(self._next_id, int(ids.max()) + 1)

    def reset(self):
        with self._lock:
            self._next_id = 0
            if self._device == "cpu":
                self._set_cpu(np.empty((0, self.code_size), np.uint8), np.empty(0, np.int64))
            else:
                self._set_torch(self._codes[:0].clone(), self._ids[:0].clone())

    def remove_ids(self, ids) -> int:
        """Removes every stored row whose id is in ids; returns how many rows were removed."""
        ids = np.unique(_ids_numpy(ids, len(ids) if hasattr(ids, "__len__") else -1))
        with self._lock:
            if self._device == "cpu":
                cur_c, cur_i = self._codes[:self._n], self._ids[:self._n]
                keep = ~np.isin(cur_i, ids)
                removed = int(self._n - keep.sum())
                if removed:
                    self._set_cpu(np.ascontiguousarray(cur_c[keep]), np.ascontiguousarray(cur_i[keep]))
                return removed
            import torch

            t = torch.as_tensor(ids, device=self._codes.device)
            keep = ~torch.isin(self._ids, t)
            removed = int(self._n - int(keep.sum()))
            if removed:
                self._set_torch(self._codes[keep].contiguous(), self._ids[keep].contiguous())
            return removed

    # ------------------------------------------------------------------ search
    def search(self, query_codes, k, *, rescore=None, candidates=None, num_threads=None):
        k = _check_k(k)
        if rescore is not None:
            return self._search_rescore(query_codes, k, rescore, candidates, num_threads)
        if candidates is not None:
            raise ValueError("candidates= only applies together with rescore=")
        return self._search(query_codes, k, num_threads)

    def _search(self, query_codes, k, num_threads):
        if self._device != "cpu":
            return self._search_torch(query_codes, k)
        as_torch = _is_tensor(query_codes)
        q = _codes_numpy(query_codes, self.code_size, "query_codes")
        threads = num_threads if num_threads is not None else self.num_threads
        if threads is not None:
            _check_k(threads, "num_threads")
        codes, ids = self._snapshot()
        d, i = _cpu.search(codes, ids, q, k, threads)
        if as_torch:
            import torch

            return torch.from_numpy(d), torch.from_numpy(i)
        return d, i

    def _search_rescore(self, query_codes, k, rescore, candidates, num_threads):
        import torch

        from .rescore import rescore as _rescore

        if isinstance(rescore, tuple):
            if len(rescore) != 2:
                raise ValueError("rescore must be float_queries or (float_queries, float_corpus_or_callable)")
            fq, corpus = rescore
        else:
            fq, corpus = rescore, None
        c = k * DEFAULT_RESCORE_MULTIPLIER if candidates is None else _check_k(candidates, "candidates")
        if c < k:
            raise ValueError(f"candidates ({c}) must be >= k ({k})")
        _, cand = self._search(query_codes, c, num_threads)
        on_cpu = self._device == "cpu"
        cand_t = torch.from_numpy(np.asarray(cand)) if on_cpu and not _is_tensor(cand) else cand
        scores, ids = _rescore(cand_t, fq, corpus, k, self._unpack_ids)
        if on_cpu and not _is_tensor(query_codes):
            return scores.numpy(), ids.numpy()
        return scores, ids

    def _unpack_ids(self, ids_t):
        """0/1 float bits [len(ids), num_bits] of the rows holding the given ids."""
        import torch

        if self._device == "cpu":
            codes, ids = self._snapshot()
            order = np.argsort(ids, kind="stable")
            want = ids_t.cpu().numpy()
            rows = order[np.searchsorted(ids[order], want)]
            return torch.from_numpy(np.unpackbits(codes[rows], axis=1).astype(np.float32))
        rows = torch.searchsorted(self._ids, ids_t)  # device rows are kept in id order
        codes = self._codes[rows]
        shifts = torch.arange(7, -1, -1, device=codes.device, dtype=torch.uint8)
        return ((codes[:, :, None] >> shifts) & 1).reshape(len(rows), -1).float()

    # ------------------------------------------------------------------ devices
    def to(self, device):
        """A copy of this index on `device` ("cpu", "cuda", "cuda:1", torch.device); self if already there."""
        import torch

        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("BinaryIndex.to('cuda'): no CUDA device is available")
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        target = "cpu" if dev.type == "cpu" else str(dev)
        if target == self._device:
            return self
        if dev.type not in ("cpu", "cuda"):
            raise ValueError(f"BinaryIndex supports cpu and cuda devices, got {device!r}")
        out = BinaryIndex(self.num_bits, num_threads=self.num_threads)
        out._next_id = self._next_id
        if self._device == "cpu":
            codes, ids = self._snapshot()
            out._device = target
            out._set_torch_sorted(torch.from_numpy(np.array(codes)).to(dev), torch.from_numpy(np.array(ids)).to(dev))
        else:
            with self._lock:
                codes, ids = self._codes, self._ids
            if dev.type == "cpu":
                out._set_cpu(codes.cpu().numpy().copy(), ids.cpu().numpy().copy())
            else:
                out._device = target
                out._set_torch(codes.to(dev), ids.to(dev))
        return out

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    def _set_torch(self, codes, ids):
        self._codes, self._ids, self._n = codes, ids, int(ids.shape[0])

    def _set_torch_sorted(self, codes, ids):
        # On a device the rows are kept in ascending id order: the tie rule (smaller id first) then
        # follows from stable sorts on row position (see torch_search.py).
        import torch

        order = torch.sort(ids, stable=True).indices
        self._set_torch(codes[order].contiguous(), ids[order].contiguous())

    def _codes_torch(self, x, name):
        import torch

        dev = self._codes.device
        if not _is_tensor(x):
            x = torch.from_numpy(_codes_numpy(x, self.code_size, name))
        if x.dtype != torch.uint8:
            raise ValueError(f"{name} must have dtype uint8 (packed bits, precision='ubinary'), got {x.dtype}")
        if x.dim() != 2 or x.shape[1] != self.code_size:
            raise ValueError(f"{name} must have shape [m, {self.code_size}] ({self.num_bits} bits per code), got {tuple(x.shape)}")
        return x.to(dev).contiguous()

    def _append_torch(self, codes, ids):
        import torch

        codes = self._codes_torch(codes, "codes")
        m = codes.shape[0]
        if ids is not None:
            ids = torch.from_numpy(_ids_numpy(ids, m)).to(codes.device)
        with self._lock:
            if ids is None:
                ids = torch.arange(self._next_id, self._next_id + m, dtype=torch.int64, device=codes.device)
            if m == 0:
                return
            self._set_torch_sorted(torch.cat([self._codes, codes]), torch.cat([self._ids, ids]))
            self._next_id = max(self._next_id, int(ids.max()) + 1)

    def _search_torch(self, query_codes, k):
        from . import cuda, torch_search

        q = self._codes_torch(query_codes, "query_codes")
        with self._lock:
            codes, ids = self._codes, self._ids
        return torch_search.search(codes, ids, q, k, self.num_bits, distance_fn=cuda.distances)

    # ------------------------------------------------------------------ persistence
    def save(self, path):
        """Writes the index atomically (temp file + fsync + rename); format in storage.py."""
        if self._device == "cpu":
            codes, ids = self._snapshot()
        else:
            with self._lock:
                codes, ids = self._codes.cpu().numpy(), self._ids.cpu().numpy()
        storage.save(path, self.num_bits, ids, codes, self._next_id)

    @classmethod
    def load(cls, path, mmap: bool = True, verify: bool = True, *, num_threads=None):
        """Reads a saved index; mmap=True maps the file read-only (adding copies it into memory).
        verify=True checks the payload crc32 (one read of the file); the header and the exact file
        size are always checked. A bad file raises storage.IndexFileError (a ValueError)."""
        num_bits, ids, codes, next_id = storage.load(path, mmap=mmap, verify=verify)
        index = cls(num_bits, num_threads=num_threads)
        index._set_cpu(codes, ids)
        index._next_id = next_id
        return index
