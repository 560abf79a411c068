"""Hugging Face Text Embeddings Inference's API: POST /rerank and /embed. TEI's defaults hold:
truncate=false (a text over the model's length is a 413), normalize=true; raw_scores=true returns
the raw score (activation_fn="identity": the logit of "Yes" for zerank) instead of the recipe's."""
from __future__ import annotations

from fastapi import APIRouter, Request

from ..encoding import Rows, json_response
from ..schemas import TeiEmbedRequest, TeiRerankRequest
from .common import ranked, server_of

router = APIRouter()


@router.post("/rerank")
async def rerank(request: Request):
    async with server_of(request).call(request, "reranker") as call:
        body = await call.body(TeiRerankRequest)
        scores, _, _ = await call.rerank(body.query, body.texts, truncate=bool(body.truncate), field="texts",
                                         activation_fn="identity" if body.raw_scores else None)

    def row(i, score):
        out = {"index": i, "score": score}
        if body.return_text:
            out["text"] = body.texts[i]
        return out
    return await json_response(ranked(scores, None, row))


@router.post("/embed")
async def embed(request: Request):
    async with server_of(request).call(request, "embedder") as call:
        body = await call.body(TeiEmbedRequest)
        rows, _ = await call.embed(body.inputs, "inputs", prompt_name=body.prompt_name, dimensions=body.dimensions,
                                   normalize=body.normalize, truncate=bool(body.truncate))
    return await json_response(Rows(rows, "float"))
