"""`zkernels serve`: an HTTP server that speaks the rerank and embedding APIs clients already use
(ZeroEntropy, Cohere/Jina, TEI, OpenAI), with cross-request batching on the packed, prefix-cached engine.

Modules, one job each: `schemas` (request/response models per API family), `scheduler` (the batching
model worker), `models` (what a served model tokenizes and which head it applies), `limits` (size limits
and the API key), `errors` (the JSON error shape), `metrics` (Prometheus text), `app` (the routes),
`command` (the `zkernels serve` command line). FastAPI is imported only when an app is built, so the
rest of the command line works without the `serve` extra.
"""
from .limits import ServeLimits

__all__ = ["create_app", "ServeLimits"]


def __getattr__(name):
    if name == "create_app":
        from .app import create_app
        return create_app
    raise AttributeError(name)
