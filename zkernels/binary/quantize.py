"""Float embeddings -> packed bits, bit-exact with sentence-transformers' `quantize_embeddings`.

bit = (value > 0), packed 8 per byte along the last axis, most significant bit first (np.packbits
order); a dimension that is not a multiple of 8 is zero-padded at the end of each row, as np.packbits
does. "ubinary" returns those bytes as uint8; "binary" returns byte - 128 as int8 (the same bits with
the top one flipped, which is what sentence-transformers stores for signed indexes).

Inputs: numpy arrays (or nested lists) give numpy out; torch tensors give torch out on the same device
(CUDA tensors are packed on the GPU, never copied to the host). 1-D input is one vector and gives a
1-D code; 2-D input is a batch.
"""
from __future__ import annotations

import numpy as np

# Every output precision of an embedding, as sentence-transformers names them; the binary ones are the
# packed-bit codes `quantize` makes and `BinaryIndex` searches.
PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
BINARY_PRECISIONS = ("ubinary", "binary")


def _check_precision(precision):
    if precision not in BINARY_PRECISIONS:
        raise ValueError(f"precision must be one of {BINARY_PRECISIONS}, got {precision!r}")


def _check_ndim(ndim):
    if ndim not in (1, 2):
        raise ValueError(f"embeddings must be 1-D (one vector) or 2-D (a batch), got {ndim}-D")


def quantize(embeddings, precision: str = "ubinary"):
    _check_precision(precision)
    torch = _torch_if_tensor(embeddings)
    if torch is not None:
        return _quantize_torch(torch, embeddings, precision)
    x = np.asarray(embeddings)
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"quantize expects floating-point embeddings, got dtype {x.dtype}")
    _check_ndim(x.ndim)
    packed = np.packbits(x > 0, axis=-1)
    if precision == "ubinary":
        return packed
    return (packed.astype(np.int16) - 128).astype(np.int8)


def _torch_if_tensor(obj):
    """The torch module when obj is a tensor; None otherwise (so numpy users never import torch)."""
    mod = type(obj).__module__
    if mod.startswith("torch"):
        import torch

        if isinstance(obj, torch.Tensor):
            return torch
    return None


def _quantize_torch(torch, x, precision):
    if not x.is_floating_point():
        raise ValueError(f"quantize expects floating-point embeddings, got dtype {x.dtype}")
    _check_ndim(x.dim())
    bits = x > 0  # the comparison is exact in every float dtype (bf16/fp16 included)
    d = bits.shape[-1]
    pad = (-d) % 8
    if pad:
        bits = torch.nn.functional.pad(bits, (0, pad))  # zero bits at the end, as np.packbits
    bits = bits.reshape(*bits.shape[:-1], (d + pad) // 8, 8).to(torch.uint8)
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8, device=x.device)
    packed = (bits * weights).sum(dim=-1, dtype=torch.int32).to(torch.uint8)
    if precision == "ubinary":
        return packed
    return (packed.to(torch.int16) - 128).to(torch.int8)


def quantize_embeddings(embeddings: np.ndarray, precision: str) -> np.ndarray:
    """sentence-transformers' quantize_embeddings semantics: int8/uint8 on ranges from the embeddings
    themselves (min/max per dimension, 255 steps); binary/ubinary through zkernels.quantize (one bit per
    dimension, value > 0, packed big-endian, binary offset by -128)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    if precision == "float32":
        return embeddings.astype(np.float32)
    if precision in BINARY_PRECISIONS:
        return quantize(embeddings, precision)
    if precision.endswith("int8"):
        if embeddings.shape[0] < 2:
            raise ValueError(f"precision={precision!r} calibrates its ranges on the embeddings of the call; "
                             f"a single embedding cannot calibrate them")
        starts = embeddings.min(axis=0).astype(np.float32)
        steps = (embeddings.max(axis=0).astype(np.float32) - starts) / 255
        steps = np.where(steps == 0, 1, steps)
        q = np.clip(np.floor((embeddings - starts) / steps), 0, 255)
        return q.astype(np.uint8) if precision == "uint8" else (q - 128).astype(np.int8)
