"""ZeroEntropy's API: POST /v1/models/rerank and /v1/models/embed (the `zeroentropy` SDK's
`models.rerank` / `models.embed`)."""
from __future__ import annotations

import time

from fastapi import APIRouter, Request

from ..encoding import Rows, json_response
from ..schemas import ZeEmbedRequest, ZeRerankRequest
from .common import ranked, server_of, text_bytes

router = APIRouter()


@router.post("/v1/models/rerank")
async def rerank(request: Request):
    t0 = time.perf_counter()
    async with server_of(request).call(request, "reranker") as call:
        body = await call.body(ZeRerankRequest)
        scores, n_tokens, seconds = await call.rerank(body.query, body.documents)
    results = ranked(scores, body.top_n, lambda i, s: {"index": i, "relevance_score": s})
    return await json_response({"results": results, "e2e_latency": time.perf_counter() - t0,
                                "inference_latency": seconds, "total_bytes": text_bytes(body.query, *body.documents),
                                "total_tokens": n_tokens, "actual_latency_mode": body.latency or "fast"})


@router.post("/v1/models/embed")
async def embed(request: Request):
    async with server_of(request).call(request, "embedder") as call:
        body = await call.body(ZeEmbedRequest)
        rows, n_tokens = await call.embed(body.input, "input", input_type=body.input_type, dimensions=body.dimensions)
    return await json_response({"results": Rows(rows, body.encoding_format, lambda i, e: {"embedding": e}),
                                "usage": {"total_bytes": text_bytes(*body.input), "total_tokens": n_tokens}})
