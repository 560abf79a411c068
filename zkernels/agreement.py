"""How far a quantized model's rankings agree with the full-precision model's on the same lists: per list
Spearman's rank correlation, whether the top document is the same, the overlap of the top k, and the score
differences. Plain numpy on score arrays; `zkernels check-quantized` feeds it both models' scores."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of x, ties given the mean of the ranks they span (as scipy.stats.rankdata)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    start = 0
    for end in range(1, len(x) + 1):
        if end == len(x) or sorted_x[end] != sorted_x[start]:
            ranks[order[start:end]] = (start + end + 1) / 2  # mean of ranks start+1 .. end
            start = end
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation of two score lists of one length (>= 2); nan when either is constant."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"spearman needs two 1-D score lists of one length >= 2, got {a.shape} and {b.shape}")
    ra, rb = average_ranks(a) - (len(a) + 1) / 2, average_ranks(b) - (len(b) + 1) / 2
    denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def top_indices(scores: np.ndarray, k: int) -> list[int]:
    """The k best indices, best first; ties keep input order."""
    return list(np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:k])


@dataclass
class ListAgreement:
    n: int                  # documents in the list
    spearman: float
    top1_same: bool
    topk_overlap: float     # |top k of one ∩ top k of the other| / min(k, n)
    max_abs_diff: float


def compare_list(reference: Sequence[float], other: Sequence[float], k: int = 10) -> ListAgreement:
    ref, oth = np.asarray(reference, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if ref.shape != oth.shape or ref.ndim != 1 or len(ref) == 0:
        raise ValueError(f"the two score lists must be 1-D of one non-zero length, got {ref.shape} and {oth.shape}")
    kk = min(k, len(ref))
    overlap = len(set(top_indices(ref, kk)) & set(top_indices(oth, kk))) / kk
    rho = spearman(ref, oth) if len(ref) >= 2 else float("nan")
    return ListAgreement(len(ref), rho, top_indices(ref, 1) == top_indices(oth, 1), overlap,
                         float(np.abs(ref - oth).max()))


def summarize(references: Sequence[Sequence[float]], others: Sequence[Sequence[float]], k: int = 10) -> dict:
    """Per-list agreement and the summary over all lists: mean and minimum Spearman, the share of lists
    with the same top document, the mean top-k overlap, and the absolute score differences over every
    document (p50, p99, max)."""
    if len(references) != len(others) or not references:
        raise ValueError(f"need the same non-zero number of lists both ways, got {len(references)} and {len(others)}")
    lists = [compare_list(r, o, k) for r, o in zip(references, others)]
    diffs = np.concatenate([np.abs(np.asarray(r, np.float64) - np.asarray(o, np.float64))
                            for r, o in zip(references, others)])
    rhos = np.array([x.spearman for x in lists])
    finite = rhos[np.isfinite(rhos)]
    return {
        "lists": lists,
        "k": k,
        "spearman_mean": float(finite.mean()) if len(finite) else float("nan"),
        "spearman_min": float(finite.min()) if len(finite) else float("nan"),
        "top1_agreement": float(np.mean([x.top1_same for x in lists])),
        "topk_overlap_mean": float(np.mean([x.topk_overlap for x in lists])),
        "diff_p50": float(np.percentile(diffs, 50)),
        "diff_p99": float(np.percentile(diffs, 99)),
        "diff_max": float(diffs.max()),
    }
