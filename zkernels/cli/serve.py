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
                    "built-in demo models (tiny trained models).")
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
                   help=f"admitted requests per model not running yet (tokenizing included) before new ones get "
                        f"503 + Retry-After at once (default: {_DEFAULTS.max_queue})")
    p.add_argument("--max-request-docs", type=int, default=_DEFAULTS.max_request_docs,
                   help=f"documents or inputs per request; more is a 413 (default: {_DEFAULTS.max_request_docs})")
    p.add_argument("--max-request-bytes", type=int, default=_DEFAULTS.max_request_bytes,
                   help=f"request body bytes; more is a 413 (default: {_DEFAULTS.max_request_bytes})")
    p.add_argument("--max-request-tokens", type=int, default=_DEFAULTS.max_request_tokens,
                   help=f"prompt tokens of one request in all (after truncation); more is a 413, before any forward "
                        f"(default: {_DEFAULTS.max_request_tokens})")
    p.add_argument("--timeout-s", type=float, default=_DEFAULTS.timeout_s,
                   help=f"seconds from arrival to response (reading the body, tokenizing, waiting and computing); a "
                        f"body not in by then is a 408, later is a 504 and the request's remaining work is dropped "
                        f"(default: {_DEFAULTS.timeout_s:g})")
    p.add_argument("--request-tokens-per-forward", type=positive_int, default=None, metavar="N",
                   help="the most tokens of one request in one forward: a request's forwards interleave with other "
                        "requests', so a small request waits for at most about one such slice of a big one "
                        "(default: 1024 on cpu, 4096 on cuda; capped by --max-tokens-per-batch)")
    p.add_argument("--shutdown-timeout-s", type=float, default=_DEFAULTS.shutdown_timeout_s,
                   help=f"on SIGTERM, seconds to finish the requests in flight; then they get 503 and the process "
                        f"exits (default: {_DEFAULTS.shutdown_timeout_s:g}, under Kubernetes' 30 s grace period)")
    p.add_argument("--scheduler", default="shortest-first", choices=["shortest-first", "rounds"],
                   help="shortest-first: one forward at a time, shortest remaining work first (default); rounds: the "
                        "policy it replaced (each round of queued requests runs to its end), kept to measure against")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (default: info)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        print(f"zkernels serve: error: {e.name} is not installed; install the server's dependencies with "
              f"python3 -m pip install -e '.[serve]' in the zkernels checkout", file=sys.stderr)
        return 2

    from ..serve.app import create_app
    from ..serve.models import load_served_models
    from ..serve.runner import is_loopback, serve

    try:
        limits = ServeLimits(max_queue=args.max_queue, max_request_docs=args.max_request_docs,
                             max_request_bytes=args.max_request_bytes, timeout_s=args.timeout_s,
                             max_request_tokens=args.max_request_tokens,
                             tokenize_threads=args.tokenize_threads,
                             request_tokens_per_forward=args.request_tokens_per_forward,
                             shutdown_timeout_s=args.shutdown_timeout_s)
    except ValueError as e:
        print(f"zkernels serve: error: {e}", file=sys.stderr)
        return 2
    api_key = args.api_key or os.environ.get("ZKERNELS_API_KEY") or None
    if api_key is None and not is_loopback(args.host):
        print(f"zkernels serve: WARNING: binding {args.host}, reachable from other machines, without an API key: "
              f"anyone who reaches this port can use the models; set --api-key or ZKERNELS_API_KEY",
              file=sys.stderr, flush=True)
    reranker, embedder, demo = load_served_models(args.reranker, args.embedder, engine_options(args))
    if demo:
        print("zkernels serve: no --reranker or --embedder given: serving the built-in DEMO models (tiny models "
              "trained to match words and phrases, Qwen's real tokenizer; not a substitute for real ones)",
              file=sys.stderr, flush=True)
    for served in (reranker, embedder):
        if served is not None:
            print(f"zkernels serve: {served.kind} {served.name} on {served.engine.device} "
                  f"({str(served.engine.dtype).replace('torch.', '')})", file=sys.stderr, flush=True)
    app = create_app(reranker, embedder, limits, api_key, demo=demo, scheduler=args.scheduler)
    # On SIGTERM/SIGINT uvicorn stops accepting; requests in flight finish within --shutdown-timeout-s, or
    # get 503 then. A failed warm-up stops the process: exit status 1.
    return serve(app, args.host, args.port, args.log_level)
