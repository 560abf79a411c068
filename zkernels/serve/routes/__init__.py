"""The routes, one module per API family: zeroentropy (/v1/models/rerank, /v1/models/embed), cohere
(/v1/rerank, /v2/rerank: Cohere v2 and Jina), tei (/rerank, /embed), openai (/v1/embeddings), and
operations (/health, /info, /metrics). Each reads its family's request, hands the texts to a `Call`
(server.py) and writes its family's answer."""
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


def routers() -> list:
    from . import cohere, openai, operations, tei, zeroentropy
    return [zeroentropy.router, cohere.router, tei.router, openai.router, operations.router]


def paths() -> tuple[str, ...]:
    """Every route's path, for /info and the metrics' route label."""
    return tuple(route.path for r in routers() for route in r.routes)
