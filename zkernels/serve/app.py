"""The ASGI app: the `Server` (server.py), its lifespan (start the device schedulers, warm up, drain),
the routers of each API family (routes/), the JSON error handlers and the middleware (request metrics,
body size limit, API key)."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .errors import ServeError, error_response, on_serve_error, on_validation_error
from .limits import ApiKeyCheck, BodySizeLimit, ServeLimits
from .metrics import Metrics
from .models import ServedEmbedder, ServedReranker
from .routes import paths, routers
from .routes.operations import version
from .server import Server

log = logging.getLogger("zkernels.serve")


def create_app(reranker: ServedReranker | None = None, embedder: ServedEmbedder | None = None,
               limits: ServeLimits | None = None, api_key: str | None = None, demo: bool = False,
               scheduler: str = "shortest-first") -> FastAPI:
    """The ASGI app. Models are loaded already; the lifespan starts their schedulers and warms them up.
    scheduler: "shortest-first" (policy.py), or "rounds" (the policy before it, kept for benchmarks)."""
    server = Server(reranker, embedder, limits or ServeLimits(), api_key, demo, scheduler)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await server.start()
        warm = asyncio.create_task(server.warm_up())
        try:
            yield
        finally:
            await server.stop()
            if not warm.done():
                warm.cancel()

    app = FastAPI(title="zkernels serve", version=version(), lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.server = server
    app.state.paths = paths()  # for /info (the operations routes cannot import the list they are in)
    app.add_exception_handler(ServeError, on_serve_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request, exc):
        return error_response(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}")

    @app.exception_handler(Exception)
    async def on_bug(request, exc):  # a bug: still a JSON answer; the traceback goes to the log
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}")

    for router in routers():
        app.include_router(router)
    # The last added runs first: metrics see every answer, then the size limit, then the key.
    app.add_middleware(ApiKeyCheck, api_key=api_key)
    app.add_middleware(BodySizeLimit, max_bytes=server.limits.max_request_bytes)
    app.add_middleware(RequestMetrics, metrics=server.metrics, routes=paths())
    return app


class RequestMetrics:
    """Counts every answered request by route and status, and its latency (outermost middleware, so
    401 / 413 answers from the middleware below count too)."""

    def __init__(self, app, metrics: Metrics, routes: tuple[str, ...]):
        self.app, self.metrics, self.routes = app, metrics, frozenset(routes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in self.routes else "other"
        start, status = time.perf_counter(), 500

        async def recording_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
        try:
            await self.app(scope, receive, recording_send)
        finally:
            self.metrics.requests.inc(route=route, status=status)
            if route not in ("/metrics", "/health"):
                self.metrics.latency.observe(time.perf_counter() - start, route=route)
