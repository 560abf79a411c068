"""What the route modules share: the server behind a request, ranked rows, text sizes."""
from __future__ import annotations

import numpy as np

from ...ranking import best_first


def server_of(request):
    return request.app.state.server


def ranked(scores: np.ndarray, top_n: int | None, make_row) -> list[dict]:
    """Rows best first (descending score, ties in input order): make_row(index, score) each."""
    return [make_row(i, float(scores[i])) for i in best_first(scores, top_n)]


def text_bytes(*texts: str) -> int:
    return sum(len(t.encode("utf-8")) for t in texts)
