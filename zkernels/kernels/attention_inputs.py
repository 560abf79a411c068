"""The varlen prefix attention's arguments, checked in one place for every kernel that takes them (the
Triton kernel in attention.py, the C++ one in cpu.py): shapes, head counts, dtypes agreeing with q, and
the index tensors, normalised to what a kernel reads (unit-stride head vectors, contiguous int32
indices). What only one kernel requires (its dtypes, head_dim, device) stays with that kernel."""
from __future__ import annotations

import weakref
from typing import NamedTuple

import torch


class AttentionInputs(NamedTuple):
    q: torch.Tensor              # [Tq, Hq, D]
    k: torch.Tensor              # [Tk, Hkv, D]
    v: torch.Tensor              # [Tk, Hkv, D]
    prefix_k: torch.Tensor       # [Tp, Hkv, D]: k itself when no prefix buffer is given
    prefix_v: torch.Tensor
    cu_seqlens_q: torch.Tensor   # int32 [S + 1]
    cu_seqlens_k: torch.Tensor   # int32 [S + 1]
    prefix_starts: torch.Tensor  # int32 [S]
    prefix_lens: torch.Tensor    # int32 [S]
    n_seqs: int


def _shape(t) -> str:
    return str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


def _heads(name: str, t, n_heads: int, head_dim: int, dtype: torch.dtype) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or t.dim() != 3:
        raise ValueError(f"{name} must be [tokens, heads, head_dim], got {_shape(t)}")
    if t.shape[1] != n_heads:
        raise ValueError(f"{name} must have {n_heads} heads, got {t.shape[1]}")
    if t.shape[2] != head_dim:
        raise ValueError(f"{name} head_dim {t.shape[2]} differs from q's {head_dim}")
    if t.dtype != dtype:
        raise ValueError(f"{name} dtype {t.dtype} differs from q's {dtype}")
    return t if t.stride(2) == 1 else t.contiguous()  # rows and heads may be strided, a head vector not


def _index(name: str, t, n: int) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or t.dim() != 1 or t.shape[0] != n or t.dtype not in (torch.int32, torch.int64):
        dtype = f" {t.dtype}" if isinstance(t, torch.Tensor) else ""
        raise ValueError(f"{name} must be a 1-D int32/int64 tensor of length {n}, got {_shape(t)}{dtype}")
    return t.to(torch.int32).contiguous()


def _version(t: torch.Tensor):
    try:
        return t._version
    except RuntimeError:  # inference tensors track no version
        return None


def _check_query_rows_fit(cu_seqlens_q: torch.Tensor, cu_seqlens_k: torch.Tensor) -> None:
    """Each sequence's query rows are its last rows (the causal mask is bottom-right aligned), so it
    cannot have more query rows than key rows: with more, the kernels would hide prefix keys from the
    first rows. On a GPU the answer costs a device sync, so it is paid once per pair of index tensors
    (a forward passes the same ones to every layer), remembered on cu_seqlens_q with both versions."""
    stamp = (_version(cu_seqlens_q), _version(cu_seqlens_k))
    memo = getattr(cu_seqlens_q, "_zkernels_rows_checked", None)
    if memo is not None and memo[0]() is cu_seqlens_k and memo[1] == stamp:
        return
    n_q = cu_seqlens_q[1:] - cu_seqlens_q[:-1]
    n_k = cu_seqlens_k[1:] - cu_seqlens_k[:-1]
    over = (n_q > n_k).nonzero()
    # Decreasing offsets (negative counts) are another defect, which a kernel that range-checks its
    # indices names itself; the counts then say nothing about query rows against keys.
    if over.numel() and not bool((n_q < 0).any() or (n_k < 0).any()):
        i = int(over[0, 0])
        raise ValueError(f"more query rows than keys (sequence {i}): {int(n_q[i])} query rows, {int(n_k[i])} key "
                         "rows (cu_seqlens_q / cu_seqlens_k); a sequence's query rows are its last key rows, so "
                         "there can be no more of them, whatever its prefix")
    try:
        cu_seqlens_q._zkernels_rows_checked = (weakref.ref(cu_seqlens_k), stamp)
    except (AttributeError, RuntimeError, TypeError):
        pass


def check_attention_inputs(q, k, v, cu_seqlens_q, cu_seqlens_k, prefix_starts, prefix_lens,
                           prefix_k=None, prefix_v=None) -> AttentionInputs:
    """The arguments of attention_torch (see attention.py), checked and normalised; a ValueError names
    the first wrong one. Each sequence must have no more query rows than key rows (checked once per pair
    of cu_seqlens tensors: on a GPU that is one sync). Other index values are not range-checked here (on a
    GPU each check would need a sync)."""
    if not isinstance(q, torch.Tensor) or q.dim() != 3:
        raise ValueError(f"q must be [tokens, heads, head_dim], got {_shape(q)}")
    n_q_heads, head_dim = q.shape[1], q.shape[2]
    if not isinstance(k, torch.Tensor) or k.dim() != 3:
        raise ValueError(f"k must be [tokens, kv_heads, head_dim], got {_shape(k)}")
    n_kv_heads = k.shape[1]
    if n_kv_heads == 0 or n_q_heads % n_kv_heads:
        raise ValueError(f"query heads ({n_q_heads}) must be a multiple of kv heads ({n_kv_heads})")
    q = q if q.stride(2) == 1 else q.contiguous()
    k = _heads("k", k, n_kv_heads, head_dim, q.dtype)
    v = _heads("v", v, n_kv_heads, head_dim, q.dtype)
    if v.shape[0] != k.shape[0]:
        raise ValueError(f"k and v must have the same rows, got {k.shape[0]} and {v.shape[0]}")
    if (prefix_k is None) != (prefix_v is None):
        raise ValueError("pass both prefix_k and prefix_v, or neither")
    pk = k if prefix_k is None else _heads("prefix_k", prefix_k, n_kv_heads, head_dim, q.dtype)
    pv = v if prefix_v is None else _heads("prefix_v", prefix_v, n_kv_heads, head_dim, q.dtype)
    if pk.shape[0] != pv.shape[0]:
        raise ValueError(f"prefix_k and prefix_v must have the same rows, got {pk.shape[0]} and {pv.shape[0]}")
    if not isinstance(cu_seqlens_q, torch.Tensor) or cu_seqlens_q.dim() != 1 or cu_seqlens_q.numel() < 1:
        raise ValueError(f"cu_seqlens_q must be 1-D [n_seqs + 1], got {_shape(cu_seqlens_q)}")
    n_seqs = cu_seqlens_q.numel() - 1
    inputs = AttentionInputs(q, k, v, pk, pv,
                             _index("cu_seqlens_q", cu_seqlens_q, n_seqs + 1),
                             _index("cu_seqlens_k", cu_seqlens_k, n_seqs + 1),
                             _index("prefix_starts", prefix_starts, n_seqs),
                             _index("prefix_lens", prefix_lens, n_seqs), n_seqs)
    if cu_seqlens_q.device != cu_seqlens_k.device:
        raise ValueError(f"cu_seqlens_q and cu_seqlens_k are on different devices: {cu_seqlens_q.device} and "
                         f"{cu_seqlens_k.device}")
    _check_query_rows_fit(cu_seqlens_q, cu_seqlens_k)
    return inputs
