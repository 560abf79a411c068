"""`zkernels serve`: the command line of the HTTP server."""
from __future__ import annotations

import argparse
import os
import sys

from ..serve.limits import ServeLimits
from .options import add_device, add_progress, engine_options, positive_int

_DEFAULTS = ServeLimits()


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Registers `serve` on an argparse subparsers object; its func is `run`."""
    p = subparsers.add_parser(
        "serve", help="serve a reranker and/or embedder over HTTP (ZeroEntropy, Cohere/Jina, TEI and OpenAI APIs)",
        description="HTTP server with cross-request batching. With neither --reranker nor --embedder it serves the "
                    "built-in demo models (random weights).")
    p.add_argument("--reranker", default=None, metavar="PATH",
                   help="zerank / Qwen3-Reranker checkpoint folder or hub id (rerank routes answer 404 without one)")
    p.add_argument("--embedder", default=None, metavar="PATH",
                   help="zembed-1 / Qwen3-Embedding checkpoint folder or hub id (embed routes answer 404 without one)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    add_device(p)
    add_progress(p)
    p.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' on every route but /health (default: env "
                        "ZKERNELS_API_KEY; no key: open)")
    # the flag's old name, kept working but no longer listed: one name per engine option everywhere
    p.add_argument("--max-batch-tokens", dest="max_tokens_per_batch", type=positive_int, help=argparse.SUPPRESS)
    p.add_argument("--tokenize-threads", type=int, default=None,
                   help="threads that tokenize requests; 0 = on the device thread, taking turns with the forwards "
                        "(default: 0 on CPU, where the forward already uses every core; 2 on CUDA, to overlap it)")
    p.add_argument("--max-queue", type=int, default=_DEFAULTS.max_queue,
                   help=f"requests waiting per model before new ones get 503 + Retry-After "
                        f"(default: {_DEFAULTS.max_queue})")
    p.add_argument("--max-request-docs", type=int, default=_DEFAULTS.max_request_docs,
                   help=f"documents or inputs per request; more is a 413 (default: {_DEFAULTS.max_request_docs})")
    p.add_argument("--max-request-bytes", type=int, default=_DEFAULTS.max_request_bytes,
                   help=f"request body bytes; more is a 413 (default: {_DEFAULTS.max_request_bytes})")
    p.add_argument("--timeout-s", type=float, default=_DEFAULTS.timeout_s,
                   help=f"seconds from arrival to response; later is a 504 and unstarted work is dropped "
                        f"(default: {_DEFAULTS.timeout_s:g})")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (default: info)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as e:
        print(f"zkernels serve: error: {e.name} is not installed; install the server's dependencies with "
              f"pip install 'zkernels[serve]'", file=sys.stderr)
        return 2

    from ..serve.app import create_app
    from ..serve.models import load_served_models

    limits = ServeLimits(max_queue=args.max_queue, max_request_docs=args.max_request_docs,
                         max_request_bytes=args.max_request_bytes, timeout_s=args.timeout_s,
                         tokenize_threads=args.tokenize_threads)
    api_key = args.api_key or os.environ.get("ZKERNELS_API_KEY") or None
    reranker, embedder, demo = load_served_models(args.reranker, args.embedder, engine_options(args))
    if demo:
        print("zkernels serve: no --reranker or --embedder given: serving the built-in DEMO models (random "
              "weights, Qwen's real tokenizer; their scores mean nothing)", file=sys.stderr, flush=True)
    for served in (reranker, embedder):
        if served is not None:
            print(f"zkernels serve: {served.kind} {served.name} on {served.engine.device} "
                  f"({str(served.engine.dtype).replace('torch.', '')})", file=sys.stderr, flush=True)
    app = create_app(reranker, embedder, limits, api_key, demo=demo)
    # uvicorn handles SIGTERM/SIGINT: it stops accepting, lets in-flight requests finish (queued ones
    # included: their handlers are still waiting), then runs the lifespan shutdown, which drains the queues.
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0
