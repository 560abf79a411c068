"""OpenAI's embeddings API: POST /v1/embeddings (the `openai` SDK's `embeddings.create`; it asks for
base64 unless told otherwise). Not OpenAI's: `input_type` ("query" / "document", default document),
sent with the SDK's extra_body, picks the checkpoint's prompt."""
from __future__ import annotations

from fastapi import APIRouter, Request

from ..encoding import Rows, json_response
from ..schemas import OpenAIEmbeddingRequest
from .common import server_of

router = APIRouter()


@router.post("/v1/embeddings")
async def embeddings(request: Request):
    server = server_of(request)
    async with server.call(request, "embedder") as call:
        body = await call.body(OpenAIEmbeddingRequest)
        rows, n_tokens = await call.embed(body.input, "input", input_type=body.input_type, dimensions=body.dimensions)
    data = Rows(rows, body.encoding_format, lambda i, e: {"object": "embedding", "index": i, "embedding": e})
    return await json_response({"object": "list", "data": data, "model": server.served["embedder"].name,
                                "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}})
