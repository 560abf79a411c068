"""Validation of what callers hand to BinaryIndex: k, packed codes, ids. Bad input -> ValueError naming it."""
from __future__ import annotations

import numbers

import numpy as np

INT64_MAX = 2**63 - 1


def is_tensor(x) -> bool:
    """True for torch tensors, checked without importing torch (numpy users never need it)."""
    return type(x).__module__.startswith("torch") and hasattr(x, "is_cuda")


def check_positive_int(value, name="k") -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_uint8_codes(dtype, shape, width, name):
    """Shared dtype/shape check for numpy arrays and tensors (dtype compared by name: 'uint8')."""
    if str(dtype).rsplit(".", 1)[-1] != "uint8":
        raise ValueError(f"{name} must have dtype uint8 (packed bits, precision='ubinary'), got {dtype}")
    if len(shape) != 2 or shape[1] != width:
        raise ValueError(f"{name} must have shape [m, {width}] ({width * 8} bits per code), got {tuple(shape)}")


def codes_numpy(x, width, name) -> np.ndarray:
    """Validated C-contiguous uint8 [m, width] numpy array (torch tensors are moved to the host)."""
    if is_tensor(x):
        check_uint8_codes(x.dtype, x.shape, width, name)
        x = x.detach().cpu().numpy()
    elif not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a numpy array or torch tensor of uint8, got {type(x).__name__}")
    check_uint8_codes(x.dtype, x.shape, width, name)
    return np.ascontiguousarray(x)


def ids_numpy(ids, m) -> np.ndarray:
    """Validated int64 [m] numpy array of ids (m = -1: any length)."""
    if is_tensor(ids):
        ids = ids.detach().cpu().numpy()
    ids = np.asarray(ids)
    if ids.dtype == np.bool_ or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids must be integers, got dtype {ids.dtype}")
    if ids.ndim != 1 or (m >= 0 and len(ids) != m):
        raise ValueError(f"ids must be 1-D with one id per code ({m}), got shape {ids.shape}")
    if ids.dtype == np.uint64 and len(ids) and ids.max() > INT64_MAX:
        raise ValueError("ids must fit in int64")
    return np.ascontiguousarray(ids, dtype=np.int64)
