"""Learned dimension projections shipped beside an embedding checkpoint (zembed-1's projections.safetensors).

Layout (as ZeroEntropy's serving code uses it; the file itself carries no description): one float matrix
per smaller dimension d, keyed by str(d). The matrices chain from the model's hidden size down:
P["1280"] is [hidden, 1280], P["640"] is [1280, 640], ... The projection to d is the product of every
matrix from the largest key down to d's, M_d = P[k1] @ P[k2] @ ... @ P[d]; a pooled row vector x maps to
x @ M_d, which is then L2-normalised. The hidden size itself is always offered (no projection).

The file is read defensively: keys must be positive integer strings, each matrix 2-D, and the shapes
must chain exactly; anything else is a CheckpointError that names the key and the shapes.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .config import CheckpointError

PROJECTIONS_FILE = "projections.safetensors"


class Projections:
    """The composed projection matrices of one checkpoint, {dimension: [hidden, dimension] float32}."""

    def __init__(self, hidden_size: int, matrices: dict[int, torch.Tensor]):
        self.hidden_size = hidden_size
        self.matrices = matrices

    @property
    def dimensions(self) -> list[int]:
        """Every dimension on offer, largest first (the hidden size, then the projected ones)."""
        return [self.hidden_size] + sorted(self.matrices, reverse=True)

    def matrix(self, dim: int) -> torch.Tensor | None:
        """The [hidden, dim] matrix for `dim`, or None for the hidden size (nothing to project)."""
        if dim == self.hidden_size:
            return None
        if dim not in self.matrices:
            raise ValueError(f"dimensions={dim} is not offered by this checkpoint; choose one of {self.dimensions}")
        return self.matrices[dim]

    def to(self, device) -> Projections:
        return Projections(self.hidden_size, {d: m.to(device) for d, m in self.matrices.items()})

    @classmethod
    def none(cls, hidden_size: int) -> Projections:
        return cls(hidden_size, {})

    @classmethod
    def from_file(cls, path: str | Path, hidden_size: int) -> Projections:
        path = Path(path)
        from safetensors import safe_open
        try:
            with safe_open(str(path), framework="pt") as f:
                raw = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:
            raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None
        return cls.from_tensors(raw, hidden_size, source=str(path))

    @classmethod
    def from_tensors(cls, raw: dict[str, torch.Tensor], hidden_size: int, source: str = PROJECTIONS_FILE
                     ) -> Projections:
        if not raw:
            raise CheckpointError(f"{source} holds no matrices")
        by_dim: dict[int, torch.Tensor] = {}
        for key, tensor in raw.items():
            if not (isinstance(key, str) and key.isdigit() and int(key) > 0):
                raise CheckpointError(f"{source}: key {key!r} is not a dimension; zkernels expects one matrix per "
                                      f"target dimension keyed by the dimension as a string ('1280', '640', ...)")
            if tensor.ndim != 2 or not tensor.is_floating_point():
                raise CheckpointError(f"{source}: matrix {key!r} must be a 2-D float tensor, got "
                                      f"{tensor.dtype} of shape {list(tensor.shape)}")
            by_dim[int(key)] = tensor
        if hidden_size in by_dim:
            raise CheckpointError(f"{source}: key '{hidden_size}' is the model's own hidden size; it needs no matrix")
        # Chain from the hidden size down: each matrix maps the previous dimension to its own.
        composed: dict[int, torch.Tensor] = {}
        current_dim, current = hidden_size, None
        for dim in sorted(by_dim, reverse=True):
            m = by_dim[dim]
            if tuple(m.shape) != (current_dim, dim):
                raise CheckpointError(
                    f"{source}: matrix '{dim}' has shape {list(m.shape)}, but the chained layout needs "
                    f"[{current_dim}, {dim}] (the previous dimension in the chain, then its own; keys "
                    f"{sorted(by_dim, reverse=True)}, hidden size {hidden_size})")
            # float64 for the product so composing does not add rounding of its own, then float32.
            m = m.to(torch.float64)
            current = m if current is None else current @ m
            composed[dim] = current.to(torch.float32)
            current_dim = dim
        return cls(hidden_size, composed)


def load_projections(folder: Path, hidden_size: int) -> Projections:
    path = folder / PROJECTIONS_FILE
    return Projections.from_file(path, hidden_size) if path.is_file() else Projections.none(hidden_size)
