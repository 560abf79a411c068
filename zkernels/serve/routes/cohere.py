"""Cohere's v2 rerank API (the `cohere` SDK's `ClientV2.rerank`), also what Jina's clients send:
POST /v2/rerank and /v1/rerank. Documents are strings or {"text": ...} objects."""
from __future__ import annotations

import uuid

from fastapi import APIRouter, Request

from ..encoding import json_response
from ..schemas import CohereRerankRequest
from .common import ranked, server_of

router = APIRouter()


@router.post("/v2/rerank")
@router.post("/v1/rerank")
async def rerank(request: Request):
    server = server_of(request)
    async with server.call(request, "reranker") as call:
        body = await call.body(CohereRerankRequest)
        texts = body.texts()
        scores, n_tokens, _ = await call.rerank(body.query, texts)

    def row(i, score):
        out = {"index": i, "relevance_score": score}
        if body.return_documents:
            out["document"] = {"text": texts[i]}
        return out
    return await json_response({"id": str(uuid.uuid4()), "results": ranked(scores, body.top_n, row),
                                "model": server.served["reranker"].name, "usage": {"total_tokens": n_tokens},
                                "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}}})
