"""Operations: GET /health (open without the API key: 200 once warm, 503 while loading, draining,
after a failed warm-up or once a device thread ended), /info (models, limits, scheduling, routes),
/metrics (Prometheus text)."""
from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from ..errors import RETRY_AFTER_S
from .common import server_of

router = APIRouter()


def version() -> str:
    try:
        from importlib.metadata import version
        return version("zkernels")
    except Exception:  # running from a source tree that was never installed
        return "unknown"


@router.get("/health")
async def health(request: Request):
    server = server_of(request)
    if server.failed is not None:
        return JSONResponse({"status": "failed", "error": server.failed}, status_code=503)
    if server.draining:
        return JSONResponse({"status": "shutting down"}, status_code=503)
    if not server.ready:
        return JSONResponse({"status": "loading"}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})
    return {"status": "ok"}


@router.get("/info")
async def info(request: Request):
    server = server_of(request)
    some = server.models[0].engine if server.models else None
    return {"version": version(), "demo_models": server.demo,
            "models": {m.kind: m.describe() for m in server.models},
            "device": some.device if some else None, "dtype": str(some.dtype).replace("torch.", "") if some else None,
            "limits": server.limits.as_dict(), "api_key_required": server.api_key_required,
            "routes": list(request.app.state.paths),
            "scheduler": {"policy": server.policy_name,
                          "max_tokens_per_batch": {m.kind: m.engine.max_tokens_per_batch for m in server.models},
                          "request_tokens_per_forward": {m.kind: server.slice_tokens(m) for m in server.models
                                                         if server.schedulers}},
            "embedding_formats": ["float", "base64"], "queue_full_status": 503}


@router.get("/metrics")
async def metrics(request: Request):
    server = server_of(request)
    for kind in server.served:
        server.metrics.queue_depth.set(server.queue_depth(kind), model=kind)
    return PlainTextResponse(server.metrics.render(time.monotonic() - server.started_at),
                             media_type="text/plain; version=0.0.4")
