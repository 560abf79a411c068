"""The rows of a BinaryIndex on a torch device (CUDA; CPU tensors work too, which the tests use).

Rows are kept in ascending id order: the tie rule of topk_contract.py (smaller id first) is then
"smaller row first", which the stable sorts of torch_search.py give for free. Distances come from
the CUDA kernel (cuda.py) on a CUDA device and from plain torch ops otherwise.

Like NumpyStore, a store is a snapshot: `append` and `remove` build new tensors and return a new
store, so a search keeps using the tensors it started with while BinaryIndex publishes the next one.
"""
from __future__ import annotations

import numpy as np
import torch

from . import torch_search
from .inputs import check_uint8_codes, codes_numpy, is_tensor


class TorchStore:
    def __init__(self, code_size: int, codes: torch.Tensor, ids: torch.Tensor):
        """codes uint8 [n, code_size] and ids int64 [n] on one device, ids in any order."""
        order = torch.sort(ids, stable=True).indices
        self.code_size = code_size
        self.codes = codes[order].contiguous()
        self.ids = ids[order].contiguous()

    @classmethod
    def empty(cls, code_size: int, device) -> TorchStore:
        return cls(code_size, torch.empty((0, code_size), dtype=torch.uint8, device=device),
                   torch.empty(0, dtype=torch.int64, device=device))

    @property
    def device(self) -> str:
        return str(self.codes.device)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    # ------------------------------------------------------------------ mutations (return a new store)
    def check_codes(self, x, name) -> torch.Tensor:
        """Validated contiguous uint8 [m, code_size] tensor on this store's device."""
        if not is_tensor(x):
            x = torch.from_numpy(codes_numpy(x, self.code_size, name))
        check_uint8_codes(x.dtype, x.shape, self.code_size, name)
        return x.to(self.codes.device).contiguous()

    def append(self, codes: torch.Tensor, ids: np.ndarray) -> TorchStore:
        ids_t = torch.from_numpy(ids).to(self.codes.device)
        return TorchStore(self.code_size, torch.cat([self.codes, codes]), torch.cat([self.ids, ids_t]))

    def remove(self, ids: np.ndarray) -> tuple[TorchStore, int]:
        keep = ~torch.isin(self.ids, torch.as_tensor(ids, device=self.codes.device))
        removed = len(self) - int(keep.sum())
        if not removed:
            return self, 0
        return TorchStore(self.code_size, self.codes[keep], self.ids[keep]), removed

    def cleared(self) -> TorchStore:
        return TorchStore.empty(self.code_size, self.codes.device)

    # ------------------------------------------------------------------ reads
    def search(self, query_codes, k: int, num_threads: int | None = None):
        """Top-k per topk_contract.py as tensors on this device (num_threads: CPU stores only)."""
        q = self.check_codes(query_codes, "query_codes")
        if self.codes.device.type == "cuda":
            from . import cuda

            distance_fn = cuda.distances
        else:
            distance_fn = torch_search.torch_distances
        return torch_search.search(self.codes, self.ids, q, k, 8 * self.code_size, distance_fn=distance_fn)

    def as_tensor(self, ids):
        return ids

    def like_query(self, query_codes, scores, ids):
        return scores, ids

    def unpack_rows(self, ids_t):
        """0/1 float bits [len(ids), num_bits] of the rows holding the given ids (each must be stored)."""
        rows = torch.searchsorted(self.ids, ids_t)  # rows are in id order
        codes = self.codes[rows]
        shifts = torch.arange(7, -1, -1, device=codes.device, dtype=torch.uint8)
        return ((codes[:, :, None] >> shifts) & 1).reshape(len(rows), -1).float()

    def to_numpy(self) -> tuple[np.ndarray, np.ndarray]:
        return self.codes.cpu().numpy(), self.ids.cpu().numpy()
