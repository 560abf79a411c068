"""Command line: `zkernels rerank ...`, `zkernels demo`, `zkernels index build|search ...`."""
from __future__ import annotations

import argparse
import sys


def _rerank(args) -> int:
    from .documents import print_ranked, read_documents
    from .reranker import Reranker

    docs = read_documents(args.documents)
    reranker = Reranker.from_pretrained(args.model, device=args.device, dtype=args.dtype, format=args.format,
                                        max_length=args.max_length, backend=args.backend)
    ranked = reranker.rank(args.query, docs, top_k=args.top_k, return_documents=True,
                           show_progress_bar=None if args.progress else False)
    print_ranked(ranked, args.json)
    return 0


def _demo(args) -> int:
    from .demo import run_demo
    return run_demo(device=args.device, backend=args.backend)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zkernels", description="Fast, exact scoring for Qwen3 rerankers and embedders")
    sub = parser.add_subparsers(dest="command", required=True)

    r = sub.add_parser("rerank", help="rank documents for a query with a zerank / Qwen3-Reranker checkpoint")
    r.add_argument("--model", required=True, help="checkpoint folder or Hugging Face hub id")
    r.add_argument("--query", required=True)
    r.add_argument("--documents", required=True,
                   help="text file, one document per line (blank lines skipped), or .jsonl (strings or {\"text\": ...})")
    r.add_argument("--format", choices=["zerank", "qwen3-reranker"], default=None, help="default: detected")
    r.add_argument("--top-k", type=int, default=None)
    r.add_argument("--device", default="cpu")
    r.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    r.add_argument("--max-length", type=int, default=None)
    r.add_argument("--backend", default=None, choices=["torch", "triton"])
    r.add_argument("--json", action="store_true", help="one JSON object per result")
    r.add_argument("--progress", action="store_true", help="show a progress bar")
    r.set_defaults(func=_rerank)

    d = sub.add_parser("demo", help="run the built-in offline demo (random-weight model) with a parity check")
    d.add_argument("--device", default="cpu")
    d.add_argument("--backend", default=None, choices=["torch", "triton"])
    d.set_defaults(func=_demo)

    from .index_cli import add_index_subcommands
    add_index_subcommands(sub)
    from .ray_cli import add_parsers as add_ray_parsers
    add_ray_parsers(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as e:
        # A clear one-line error for bad input; tracebacks are for bugs.
        where = " ".join(filter(None, [args.command, getattr(args, "index_command", None)]))
        print(f"zkernels {where}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
