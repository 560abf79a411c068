"""`zkernels serve`: an HTTP server that speaks the rerank and embedding APIs clients already use
(ZeroEntropy, Cohere/Jina, TEI, OpenAI), with cross-request batching on the packed, prefix-cached engine.

Modules, one job each: `app` (the ASGI app: lifespan, routers, middleware), `routes/` (one router per
API family, and operations), `server` (what the routes share, and one request's way through it),
`bodies` (reading and checking request bodies), `encoding` (JSON answers), `schemas` (request models
per API family), `scheduler` (the device thread that runs the forwards), `policy` (what goes into the
next forward), `models` (what a served model tokenizes and which head it applies), `limits` (limits and
the API key), `errors` (the JSON error shape), `metrics` (Prometheus text), `runner` (uvicorn with a
bounded drain). The command line is `zkernels.cli.serve`. FastAPI is imported only when an app is
built, so the rest of the command line works without the `serve` extra.
"""
from .limits import ServeLimits

__all__ = ["create_app", "ServeLimits"]


def __getattr__(name):
    if name == "create_app":
        from .app import create_app
        return create_app
    raise AttributeError(name)
