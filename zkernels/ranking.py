"""The one best-first ordering every ranked result uses (Reranker.rank, Pipeline.search, the server's
rerank routes): by descending score, ties kept in input order, NaN last."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def best_first(scores: Sequence[float] | np.ndarray, top_k: int | None = None) -> list[int]:
    """Indices of `scores`, best first; the first `top_k` of them (all with None)."""
    # A stable sort of the negated scores keeps equal scores in input order; NaN sorts after every number.
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return order[:top_k].tolist() if top_k is not None else order.tolist()
