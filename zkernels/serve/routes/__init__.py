"""The routes, one module per API family: zeroentropy (/v1/models/rerank, /v1/models/embed), cohere
(/v1/rerank, /v2/rerank: Cohere v2 and Jina), tei (/rerank, /embed), openai (/v1/embeddings), and
operations (/health, /info, /metrics). Each reads its family's request, hands the texts to a `Call`
(server.py) and writes its family's answer. What they share is in common.py, which imports none of them."""
from __future__ import annotations

from . import cohere, openai, operations, tei, zeroentropy


def routers() -> list:
    return [zeroentropy.router, cohere.router, tei.router, openai.router, operations.router]


def paths() -> tuple[str, ...]:
    """Every route's path, for /info and the metrics' route label."""
    return tuple(route.path for r in routers() for route in r.routes)
